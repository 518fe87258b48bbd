"""Similarity helpers shaped like sentence-transformers' ``util.cos_sim`` / ``semantic_search``.

Inputs may be NumPy arrays, lists or CPU torch tensors; outputs are NumPy. ``semantic_search``
runs the C top-k search of :mod:`mambaret.search.index` on normalised copies of the embeddings.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from .. import _C
from .._native import default_threads

__all__ = ["similarity", "semantic_search"]


def _as_matrix(x, what: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.dtype.kind not in "fiu" or arr.dtype.kind == "b":
        raise ValueError(f"{what} must be a numeric [n, dim] matrix (or one [dim] vector), got "
                         f"shape {arr.shape} and dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return arr


def _normalized(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # a zero vector stays zero: its cosine with anything is 0, not NaN
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _same_dim(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"dimensions differ: {a.shape[1]} and {b.shape[1]}")


def similarity(a, b) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``: float32 [na, nb]."""
    a, b = _as_matrix(a, "a"), _as_matrix(b, "b")
    _same_dim(a, b)
    return _normalized(a) @ _normalized(b).T


def semantic_search(query_embeddings, corpus_embeddings, query_chunk_size: int = 100,
                    corpus_chunk_size: int = 500000, top_k: int = 10,
                    score_function: str = "cosine", threads: Optional[int] = None
                    ) -> List[List[Dict[str, float]]]:
    """For each query, its ``top_k`` corpus entries as ``[{"corpus_id": int, "score": float}]``,
    best first (equal scores: lower corpus_id first). Fewer than top_k when the corpus is smaller.

    ``score_function`` is ``"cosine"`` or ``"dot"``. The chunk sizes bound the memory of one
    step, as in sentence-transformers; the result does not depend on them.
    """
    if score_function not in ("cosine", "dot"):
        raise ValueError(f"score_function must be 'cosine' or 'dot', got {score_function!r}")
    for name, value in (("top_k", top_k), ("query_chunk_size", query_chunk_size),
                        ("corpus_chunk_size", corpus_chunk_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    queries = _as_matrix(query_embeddings, "query_embeddings")
    corpus = _as_matrix(corpus_embeddings, "corpus_embeddings")
    _same_dim(queries, corpus)
    if score_function == "cosine":
        queries, corpus = _normalized(queries), _normalized(corpus)
    segments = [corpus[start:start + corpus_chunk_size] for start in range(0, corpus.shape[0], corpus_chunk_size)]
    threads = default_threads(threads)
    results: List[List[Dict[str, float]]] = []
    for start in range(0, queries.shape[0], query_chunk_size):
        scores, ids = _C.flat_search(queries[start:start + query_chunk_size], segments, int(top_k),
                                     threads=threads)
        for row_scores, row_ids in zip(scores.tolist(), ids.tolist()):
            results.append([{"corpus_id": i, "score": s} for s, i in zip(row_scores, row_ids) if i >= 0])
    return results
