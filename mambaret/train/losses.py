"""Bi-encoder losses with sentence-transformers' semantics.

Every loss takes already L2-normalised embeddings, so a dot product is the cosine:
- `multiple_negatives_ranking_loss`: InfoNCE. Query i's candidates are every positive in the
  batch plus every hard negative, scored cosine x scale; the target is its own positive. The
  loss classes leave out of query i's candidates any other candidate whose text is its own
  positive's (a document judged for several queries of one batch is no negative for them).
- `CachedMultipleNegativesRankingLoss`: the same loss and gradients, computed GradCache-style so
  that only one mini-batch of texts holds activations at a time (the batch size then does not
  depend on memory).
- `mse_distillation_loss`: mean squared error to a teacher's embeddings, averaged over columns.
- `kl_distillation_loss`: KL(teacher || student) between the softmax distributions of their
  scores over each query's candidates (positive first, then its negatives), times T^2.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

DEFAULT_SCALE = 20.0


def multiple_negatives_ranking_loss(queries: torch.Tensor, positives: torch.Tensor,
                                    negatives: torch.Tensor | None = None, scale: float = DEFAULT_SCALE,
                                    excluded: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over queries of -log softmax(scale * q_i . [positives; negatives])[i].

    queries, positives: [B, d]; negatives: [M, d] (any M, e.g. B x n hard negatives), or None.
    excluded: optional bool [B, B + M]; True leaves that candidate out of that query's softmax
    (never its own positive, the diagonal).
    """
    if queries.shape != positives.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and positives {tuple(positives.shape)} differ in shape")
    candidates = positives if negatives is None or negatives.shape[0] == 0 else torch.cat([positives, negatives])
    scores = scale * (queries @ candidates.T)
    if excluded is not None:
        if excluded.shape != scores.shape:
            raise ValueError(f"excluded {tuple(excluded.shape)} does not match the scores {tuple(scores.shape)}")
        if bool(excluded.diagonal().any()):
            raise ValueError("excluded may not leave out a query's own positive")
        scores = scores.masked_fill(excluded.to(scores.device), float("-inf"))
    labels = torch.arange(queries.shape[0], device=queries.device)
    return F.cross_entropy(scores, labels)


def mse_distillation_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over columns (query, positive, ...) of the MSE between student and teacher embeddings."""
    if len(student) != len(teacher) or not student:
        raise ValueError("student and teacher need the same, non-zero number of embedding columns")
    return torch.stack([F.mse_loss(s, t.to(s.dtype)) for s, t in zip(student, teacher)]).mean()


def kl_distillation_loss(queries: torch.Tensor, candidates: torch.Tensor, teacher_scores: torch.Tensor,
                         temperature: float = 1.0) -> torch.Tensor:
    """KL divergence between teacher and student score distributions.

    queries: [B, d]; candidates: [B, n, d] (positive then negatives for each query);
    teacher_scores: [B, n]. Student scores are dot products (cosines of normalised embeddings).
    """
    if candidates.dim() != 3 or candidates.shape[0] != queries.shape[0]:
        raise ValueError(f"candidates must be [B, n, d] with B = {queries.shape[0]}, got {tuple(candidates.shape)}")
    if teacher_scores.shape != candidates.shape[:2]:
        raise ValueError(f"teacher scores must be {tuple(candidates.shape[:2])}, got {tuple(teacher_scores.shape)}")
    if candidates.shape[1] < 2:
        raise ValueError("KL distillation needs at least two candidates per query (a positive and a negative)")
    student_scores = torch.einsum("bd,bnd->bn", queries, candidates) / temperature
    teacher_probs = torch.softmax(teacher_scores.detach().to(student_scores.dtype) / temperature, dim=1)
    kl = F.kl_div(torch.log_softmax(student_scores, dim=1), teacher_probs, reduction="batchmean")
    return kl * temperature ** 2


def same_text_as_positive(positives: list[str], negatives: list[str]) -> torch.Tensor | None:
    """bool [B, B + M]: candidate j's text equals query i's positive and j is not i (a false
    negative); None when there is none, the usual case."""
    candidates = list(positives) + list(negatives)
    mask = torch.tensor([[i != j and text == positive for j, text in enumerate(candidates)]
                         for i, positive in enumerate(positives)], dtype=torch.bool)
    return mask if bool(mask.any()) else None


class MultipleNegativesRankingLoss:
    """InfoNCE over in-batch and hard negatives (sentence-transformers' default configuration).

    Called with an `embed(texts) -> [n, d]` function (normalised, with autograd) and the batch's
    columns; returns the loss tensor, on which the caller runs backward().
    """

    cached = False

    def __init__(self, scale: float = DEFAULT_SCALE):
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.scale = float(scale)

    def __call__(self, embed: Callable[[list[str]], torch.Tensor], queries: list[str], positives: list[str],
                 negatives: list[str]) -> torch.Tensor:
        q = embed(queries)
        p = embed(positives)
        n = embed(negatives) if negatives else None
        return self.loss_from_embeddings(q, p, n, positives, negatives)

    def loss_from_embeddings(self, q, p, n, positives: list[str], negatives: list[str]) -> torch.Tensor:
        """The loss of the batch's embeddings; the texts mark candidates equal to a query's positive."""
        return multiple_negatives_ranking_loss(q, p, n, self.scale, same_text_as_positive(positives, negatives))


class CachedMultipleNegativesRankingLoss(MultipleNegativesRankingLoss):
    """MultipleNegativesRankingLoss computed in three passes (GradCache, Gao et al. 2021):

    1. embed every text without autograd, mini_batch_size texts at a time;
    2. compute the loss on those embeddings as leaves and take its gradient w.r.t. them;
    3. embed each mini-batch again with autograd and back-propagate its slice of that gradient.

    The loss equals the uncached one and the parameter gradients are the same sums (up to the
    order of float additions), because the second embedding pass reproduces the first: a Mamba
    backbone has no dropout or other randomness in its forward. backward() has already run when
    this returns, so the caller must not run it again (`cached` tells it).
    """

    cached = True

    def __init__(self, scale: float = DEFAULT_SCALE, mini_batch_size: int = 32):
        super().__init__(scale)
        if isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, int) or mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be a positive int, got {mini_batch_size!r}")
        self.mini_batch_size = mini_batch_size

    def _chunks(self, texts: list[str]):
        for start in range(0, len(texts), self.mini_batch_size):
            yield texts[start:start + self.mini_batch_size]

    def __call__(self, embed, queries, positives, negatives) -> torch.Tensor:
        columns = [queries, positives] + ([negatives] if negatives else [])
        # 1. embeddings without activations kept
        with torch.no_grad():
            cached = [torch.cat([embed(chunk) for chunk in self._chunks(col)]) for col in columns]
        # 2. the loss and its gradient with respect to every embedding
        leaves = [c.detach().requires_grad_() for c in cached]
        loss = self.loss_from_embeddings(leaves[0], leaves[1], leaves[2] if len(leaves) > 2 else None,
                                         positives, negatives)
        loss.backward()
        # 3. one mini-batch at a time: recompute with autograd and push its gradient slice through
        for col, leaf in zip(columns, leaves):
            start = 0
            for chunk in self._chunks(col):
                emb = embed(chunk)
                emb.backward(leaf.grad[start:start + len(chunk)].to(emb.dtype))
                start += len(chunk)
        return loss.detach()
