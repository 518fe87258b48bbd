"""A teacher whose embeddings were computed once, ahead of training.

Distilling from a live teacher runs the teacher on every batch, which on a CPU costs more than
the student's own step. Embedding the training texts once and looking them up is the usual way
(sentence-transformers users pass them as labels to MSELoss); `PrecomputedEmbeddings` is that
lookup behind the `encode` call the Trainer makes on a teacher.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class PrecomputedEmbeddings:
    """texts[i] -> vectors[i]. encode(texts) returns the stored rows (normalised on request).

    A text given twice must have the same vector both times (to 1e-3: a batched teacher's float
    sums differ a little with the batch); a text that was not embedded is a KeyError naming it,
    never a silent zero vector."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray):
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ValueError(f"vectors must be [len(texts), d] = [{len(texts)}, d], got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise ValueError("the teacher's vectors hold NaN or inf")
        self.vectors = vectors
        self.row: dict[str, int] = {}
        for i, text in enumerate(texts):
            seen = self.row.setdefault(text, i)
            if seen != i and not np.allclose(vectors[seen], vectors[i], rtol=0, atol=1e-3):
                raise ValueError(f"text {text[:60]!r} appears twice with different vectors (rows {seen} and {i})")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.row)

    def __contains__(self, text: str) -> bool:
        return text in self.row

    def encode(self, texts: Sequence[str], normalize_embeddings: bool = False, **_ignored) -> np.ndarray:
        try:
            rows = [self.row[t] for t in texts]
        except KeyError as exc:
            raise KeyError(f"the teacher has no embedding for {str(exc.args[0])[:80]!r}") from None
        out = self.vectors[rows]
        if normalize_embeddings:
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out
