"""Matryoshka and layer-exit losses with sentence-transformers' semantics and defaults.

- `MatryoshkaLoss(base, dims, weights=None, n_dims_per_step=-1)`: the base loss on the
  embeddings truncated to each of `dims` and L2-normalised again, times each dim's weight
  (default 1), summed; n_dims_per_step > 0 samples that many dims per step. A teacher's vectors
  (MSE distillation) are truncated to the same dim when they have the student's full width, not
  renormalised (sentence-transformers' rule).
- `AdaptiveLayerLoss(inner, n_layers, n_layers_per_step=1, last_layer_weight=1,
  prior_layers_weight=1, kl_div_weight=1, kl_temperature=0.3, layer_weighting="uniform")`: the
  inner loss on the last layer's embeddings times last_layer_weight, plus, for each of
  n_layers_per_step prior exits drawn per step (-1: all), the inner loss on that exit's
  embeddings times weight(i) / (exits drawn) x prior_layers_weight, and
  KL(softmax(final / T) || softmax(exit / T)) over the embedding dimensions of all the step's texts
  (the final side detached, "batchmean") x T x kl_div_weight. The prior exits are 1..n_layer-1
  (or those listed), and i = k - 1 is the exit's index in transformers' Mamba-1 hidden_states,
  the index sentence-transformers' layer_weighting reads.
- `Matryoshka2dLoss`: AdaptiveLayerLoss over MatryoshkaLoss with n_layers_per_step=1 and
  n_dims_per_step=1.

Exit embeddings are the model's exits (mambaret.arch.exits: block k's last-token state through
the exit's gain, L2-normalised), not raw hidden states. The base losses are MNRL (cached MNRL with
MatryoshkaLoss only: the cached loss back-propagates once per step, sentence-transformers warns
that AdaptiveLayerLoss cannot wrap it) and MSE distillation.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .losses import (DEFAULT_SCALE, CachedMultipleNegativesRankingLoss, mse_distillation_loss,
                     multiple_negatives_ranking_loss, same_text_as_positive)

LAYER_WEIGHTINGS = ("uniform", "log", "linear")


@dataclass
class LossBatch:
    """A step's texts and, for MSE distillation, the teacher's vectors per column."""

    queries: list[str]
    positives: list[str]
    negatives: list[str]
    teacher: list[torch.Tensor] | None = None


def shrink(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """The first `dim` dimensions, L2-normalised (sentence-transformers' shrink)."""
    return F.normalize(embeddings[..., :dim].float(), p=2, dim=-1).to(embeddings.dtype)


class MNRLBase:
    """InfoNCE over in-batch and hard negatives on columns [queries, positives(, negatives)]."""

    def __init__(self, scale: float = DEFAULT_SCALE):
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.scale = float(scale)

    def columns(self, batch: LossBatch) -> list[list[str]]:
        return [batch.queries, batch.positives] + ([batch.negatives] if batch.negatives else [])

    def loss(self, embeddings: list[torch.Tensor], batch: LossBatch, dim: int | None = None) -> torch.Tensor:
        negatives = embeddings[2] if len(embeddings) > 2 else None
        return multiple_negatives_ranking_loss(embeddings[0], embeddings[1], negatives, self.scale,
                                               same_text_as_positive(batch.positives, batch.negatives))


class MSEBase:
    """MSE to the teacher's vectors on columns [queries, positives]. full_dim: the student's
    width, for truncating a teacher as wide as the student along with it."""

    def __init__(self, full_dim: int | None = None):
        self.full_dim = full_dim

    def columns(self, batch: LossBatch) -> list[list[str]]:
        return [batch.queries, batch.positives]

    def loss(self, embeddings: list[torch.Tensor], batch: LossBatch, dim: int | None = None) -> torch.Tensor:
        if batch.teacher is None:
            raise ValueError("MSE distillation needs the teacher's vectors")
        teacher = batch.teacher
        if dim is not None:  # a teacher as wide as the student is truncated with it
            full = self.full_dim
            teacher = [t[..., :dim] if t.shape[-1] == full else t for t in teacher]
        return mse_distillation_loss(embeddings, teacher)


def _check_int_list(name: str, values, low: int, high: int) -> list[int]:
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in values):
        raise ValueError(f"{name} must be a non-empty list of ints in {low}..{high}, got {values!r}")
    return list(values)


class MatryoshkaLoss:
    """The base loss at several widths (module docstring). Called on full-width, L2-normalised
    embeddings of the base's columns through `loss`; `__call__(embed, batch)` embeds them first."""

    cached = False

    def __init__(self, base, matryoshka_dims: Sequence[int], matryoshka_weights: Sequence[float] | None = None,
                 n_dims_per_step: int = -1, full_dim: int | None = None):
        dims = _check_int_list("matryoshka_dims", list(matryoshka_dims), 1, full_dim or 1 << 30)
        if matryoshka_weights is None:
            matryoshka_weights = [1] * len(dims)
        elif len(matryoshka_weights) != len(dims):
            raise ValueError("matryoshka_weights must be as long as matryoshka_dims")
        if isinstance(n_dims_per_step, bool) or not isinstance(n_dims_per_step, int):
            raise ValueError(f"n_dims_per_step must be an int (-1: all dims), got {n_dims_per_step!r}")
        pairs = sorted(zip(dims, matryoshka_weights), key=lambda p: p[0], reverse=True)  # largest first, as ST
        self.dims = tuple(p[0] for p in pairs)
        self.weights = tuple(float(p[1]) for p in pairs)
        self.n_dims_per_step = n_dims_per_step
        self.base = base
        if full_dim is not None and isinstance(base, MSEBase):
            base.full_dim = full_dim
        self.last_dims: tuple[int, ...] = ()  # the dims the last step used

    def columns(self, batch: LossBatch) -> list[list[str]]:
        return self.base.columns(batch)

    def _dim_indices(self) -> list[int]:
        indices = list(range(len(self.dims)))
        if 0 < self.n_dims_per_step < len(indices):
            indices = sorted(random.sample(indices, self.n_dims_per_step))
        return indices

    def loss(self, embeddings: list[torch.Tensor], batch: LossBatch, dim: int | None = None) -> torch.Tensor:
        indices = self._dim_indices()
        self.last_dims = tuple(self.dims[i] for i in indices)
        total = 0.0
        for i in indices:
            width = self.dims[i]
            total = total + self.weights[i] * self.base.loss([shrink(e, width) for e in embeddings], batch, dim=width)
        return total

    def __call__(self, embed: Callable[[list[str]], torch.Tensor], batch: LossBatch) -> torch.Tensor:
        return self.loss([embed(col) for col in self.columns(batch)], batch)


class CachedMatryoshkaLoss(CachedMultipleNegativesRankingLoss):
    """Cached MNRL (GradCache) whose loss on the cached embeddings is MatryoshkaLoss over MNRL: the
    same loss and gradients as the uncached MatryoshkaLoss, one mini-batch of activations at a time."""

    def __init__(self, scale: float, mini_batch_size: int, matryoshka: MatryoshkaLoss):
        super().__init__(scale, mini_batch_size)
        self.matryoshka = matryoshka

    def loss_from_embeddings(self, q, p, n, positives, negatives) -> torch.Tensor:
        batch = LossBatch([], list(positives), list(negatives))
        return self.matryoshka.loss([q, p] + ([n] if n is not None else []), batch)


class AdaptiveLayerLoss:
    """The inner loss at the last layer and at prior exits, with a KL term to the last layer
    (module docstring). `__call__(embed_exits, batch)`: embed_exits(texts, layers) -> {k: [n, d]}
    full-width L2-normalised exit embeddings from one pass."""

    cached = False

    def __init__(self, inner, n_layers: int, n_layers_per_step: int = 1, last_layer_weight: float = 1.0,
                 prior_layers_weight: float = 1.0, kl_div_weight: float = 1.0, kl_temperature: float = 0.3,
                 layer_weighting: str | Callable[[int], float] = "uniform", exit_layers: Sequence[int] | None = None):
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
        if isinstance(n_layers_per_step, bool) or not isinstance(n_layers_per_step, int):
            raise ValueError(f"n_layers_per_step must be an int (-1: all prior layers), got {n_layers_per_step!r}")
        if not callable(layer_weighting) and layer_weighting not in LAYER_WEIGHTINGS:
            raise ValueError(f"layer_weighting must be one of {LAYER_WEIGHTINGS} or a callable, got {layer_weighting!r}")
        if kl_temperature < 0:
            raise ValueError(f"kl_temperature must be >= 0 (0: no KL term), got {kl_temperature}")
        if exit_layers is None:
            prior = list(range(1, n_layers))
        else:
            prior = sorted(set(_check_int_list("exit_layers", list(exit_layers), 1, n_layers)) - {n_layers})
        self.inner = inner
        self.n_layers = n_layers
        self.prior = prior
        self.n_layers_per_step = n_layers_per_step
        self.last_layer_weight = float(last_layer_weight)
        self.prior_layers_weight = float(prior_layers_weight)
        self.kl_div_weight = float(kl_div_weight)
        self.kl_temperature = float(kl_temperature)
        self.layer_weighting = layer_weighting
        self.last_layers: tuple[int, ...] = ()  # the prior exits the last step used

    def layer_weight(self, index: int) -> float:
        """sentence-transformers' weighting of hidden_states[index] (index = exit - 1)."""
        if callable(self.layer_weighting):
            return float(self.layer_weighting(index))
        if self.layer_weighting == "log":
            return 1.0 / (1.0 + math.log(1 + index))
        if self.layer_weighting == "linear":
            return 1.0 / (1 + index)
        return 1.0

    def columns(self, batch: LossBatch) -> list[list[str]]:
        return self.inner.columns(batch)

    def _layers(self) -> list[int]:
        layers = list(self.prior)
        if 0 < self.n_layers_per_step < len(layers):
            layers = random.sample(layers, self.n_layers_per_step)
        return layers

    def __call__(self, embed_exits, batch: LossBatch) -> torch.Tensor:
        layers = self._layers()
        self.last_layers = tuple(layers)
        n = self.n_layers
        per_column = [embed_exits(col, layers + [n]) for col in self.columns(batch)]
        loss = self.inner.loss([c[n] for c in per_column], batch) * self.last_layer_weight
        if not layers:
            return loss
        T = self.kl_temperature
        if T > 0:  # the last layer teaches the exits: no gradient through its side
            final = F.softmax(torch.cat([c[n] for c in per_column]) / T, dim=-1).detach()
        for k in layers:
            exit_embeddings = [c[k] for c in per_column]
            weight = self.layer_weight(k - 1) / len(layers) * self.prior_layers_weight
            loss = loss + self.inner.loss(exit_embeddings, batch) * weight
            if T > 0:
                kl = F.kl_div(F.log_softmax(torch.cat(exit_embeddings) / T, dim=-1), final, reduction="batchmean")
                loss = loss + kl * T * self.kl_div_weight
        return loss


def matryoshka_2d_loss(base, n_layers: int, matryoshka_dims: Sequence[int],
                       matryoshka_weights: Sequence[float] | None = None, n_layers_per_step: int = 1,
                       n_dims_per_step: int = 1, full_dim: int | None = None, **adaptive) -> AdaptiveLayerLoss:
    """sentence-transformers' Matryoshka2dLoss: AdaptiveLayerLoss over MatryoshkaLoss."""
    inner = MatryoshkaLoss(base, matryoshka_dims, matryoshka_weights, n_dims_per_step, full_dim=full_dim)
    return AdaptiveLayerLoss(inner, n_layers, n_layers_per_step=n_layers_per_step, **adaptive)


def default_matryoshka_dims(hidden_size: int, listed: Sequence[int] | None = None) -> list[int]:
    """The dims a model lists (config.json matryoshka_dims), else the full width halved three
    times: [d, d/2, d/4, d/8] (sentence-transformers has no default; its examples halve so)."""
    if listed:
        return sorted(set(listed), reverse=True)
    dims = [hidden_size >> i for i in range(4)]
    return sorted({d for d in dims if d >= 1}, reverse=True)
