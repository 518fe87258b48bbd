"""Indexes from embedding shards, with their recall measured against exact search.

``build_index(source, kind)`` reads embeddings shard by shard (an array, ``.npy`` files, Parquet
shard folders: see :mod:`mambaret.encoding.shards`) into

- ``"flat"``: our exact :class:`~mambaret.FlatIndex`; with ``output=`` the vectors are written
  shard by shard into a ``.npy`` file and searched memory-mapped, so the index may exceed RAM;
- ``"ivf_flat"``, ``"ivf_pq"``, ``"hnsw"``: FAISS (``faiss-cpu``) ``IndexIVFFlat``,
  ``IndexIVFPQ``, ``IndexHNSWFlat``, inner product metric, trained on a sample of the vectors;

then searches a sample of queries with it and with exact search and reports recall@k.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .._native import default_threads
from .index import FlatIndex
from ..encoding.shards import count_rows, iter_embedding_shards

__all__ = ["build_index", "BuiltIndex", "KINDS", "recall_at_k"]

KINDS = ("flat", "ivf_flat", "ivf_pq", "hnsw")


def recall_at_k(found_ids: np.ndarray, exact_ids: np.ndarray, k: int = 10) -> float:
    """Mean over queries of |found top-k  exact top-k| / k (padding ids -1 never count)."""
    hits = 0
    for found, exact in zip(found_ids[:, :k], exact_ids[:, :k]):
        hits += len(set(found[found != -1].tolist()) & set(exact[exact != -1].tolist()))
    return hits / (k * max(len(exact_ids), 1))


@dataclass
class BuiltIndex:
    """An index built by :func:`build_index` and its measurements.

    ``search(queries, k)`` returns ``(scores [nq, k], ids [nq, k])`` with the input's ids (int64
    with -1 padding, or an object array of str with None) for every kind.
    """

    kind: str
    index: object                  # a FlatIndex or a faiss index (labels are row positions)
    ids: Optional[np.ndarray]      # the row positions' ids (None for a FlatIndex, which keeps its own)
    params: dict
    ntotal: int
    dim: int
    recall: float                  # recall@k of the query sample against exact search
    k: int
    build_seconds: float
    search_seconds: float          # for the query sample
    n_queries: int
    path: Optional[str] = None

    def search(self, queries, k: int = 10):
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if self.kind == "flat":
            return self.index.search(q, k)
        scores, labels = self.index.search(q, k)
        found = labels >= 0
        if self.ids is None:
            return scores, labels
        if self.ids.dtype == object:
            out = np.full(labels.shape, None, dtype=object)
        else:
            out = np.full(labels.shape, -1, dtype=np.int64)
        out[found] = self.ids[labels[found]]
        return scores, out

    def summary(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return (f"{self.kind}({params}): {self.ntotal} x {self.dim}, recall@{self.k} {self.recall:.4f} "
                f"on {self.n_queries} queries, build {self.build_seconds:.2f} s, "
                f"search {self.search_seconds / max(self.n_queries, 1) * 1e3:.3f} ms/query")


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("FAISS indexes need faiss: pip install faiss-cpu "
                          "(or pip install \".[faiss]\" in the mambaret repository)") from None
    return faiss


def _collect(source, ids, output):
    """(ids or None, vectors) of every shard, in one array; under output, a memory-mapped .npy
    written shard by shard, so memory holds one shard at a time."""
    all_ids, have_ids, dims = [], [], set()
    if output is None:
        parts = []
        for shard_ids, emb in iter_embedding_shards(source, ids):
            parts.append(np.asarray(emb, dtype=np.float32))
            have_ids.append(shard_ids is not None)
            all_ids.append(shard_ids)
            if emb.shape[0]:
                dims.add(emb.shape[1])
        if len(dims) > 1:
            raise ValueError(f"shards of different dimensions: {sorted(dims)}")
        vectors = np.ascontiguousarray(np.concatenate(parts)) if parts else np.empty((0, 0), np.float32)
    else:
        n = count_rows(source)
        path = os.fspath(output)
        tmp = f"{path}.tmp{os.getpid()}.npy"
        matrix, row = None, 0
        try:
            for shard_ids, emb in iter_embedding_shards(source, ids):
                have_ids.append(shard_ids is not None)
                all_ids.append(shard_ids)
                if not emb.shape[0]:
                    continue
                if matrix is None:
                    matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, emb.shape[1]))
                if emb.shape[1] != matrix.shape[1]:
                    raise ValueError(f"shards of different dimensions: {matrix.shape[1]} and {emb.shape[1]}")
                if row + emb.shape[0] > n:
                    raise ValueError("the shards hold more rows than their metadata says")
                for start in range(0, emb.shape[0], 1 << 16):
                    chunk = np.asarray(emb[start:start + (1 << 16)], dtype=np.float32)
                    matrix[row:row + chunk.shape[0]] = chunk
                    row += chunk.shape[0]
            if matrix is None or row != n:
                raise ValueError("no embeddings to index" if matrix is None else
                                 f"the shards hold {row} rows, their metadata says {n}")
            matrix.flush()
            del matrix
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        vectors = np.load(path, mmap_mode="r")
    if vectors.shape[0] == 0:
        raise ValueError("no embeddings to index")
    if any(have_ids) and not all(have_ids):
        raise ValueError("some shards have ids and some do not")
    merged = np.concatenate(all_ids) if all(have_ids) else None
    if merged is not None and merged.dtype.kind in "US":
        merged = merged.astype(object)
    return merged, vectors


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def build_index(embeddings_or_shards, kind: str = "flat", *, ids=None, output=None,
                nlist: Optional[int] = None, nprobe: int = 16, m: Optional[int] = None, nbits: int = 8,
                M: int = 32, efConstruction: int = 200, efSearch: int = 128,
                train_size: Optional[int] = None, queries=None, n_queries: int = 1000, k: int = 10,
                seed: int = 0, threads: Optional[int] = None) -> BuiltIndex:
    """Builds an index of ``kind`` over embeddings or shards and measures its recall@k.

    - ``ids``: ids for a single array or ``.npy`` (shards carry their own); default positions.
    - ``output``: ``"flat"`` only: a ``.npy`` path the vectors are written to and memory-mapped.
    - IVF: ``nlist`` lists (default ``4 * sqrt(n)``, at most n / 39), ``nprobe`` searched;
      IVF-PQ: ``m`` sub-quantizers (must divide dim; default dim / 8 or the largest divisor of
      dim up to that) of ``nbits`` bits; HNSW: ``M`` links, ``efConstruction``, ``efSearch``.
    - ``train_size``: vectors sampled to train IVF (default ``min(n, 256 * nlist)``, at
      least what PQ needs).
    - ``queries``: the query sample for recall (default ``n_queries`` stored vectors drawn at
      random, which then find themselves); ``k``: the recall depth.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if output is not None and kind != "flat":
        raise ValueError("output= memory-maps a flat index; FAISS indexes are written with faiss.write_index")
    k = _positive("k", k)
    threads = default_threads(threads)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    all_ids, vectors = _collect(embeddings_or_shards, ids, output)
    n, dim = vectors.shape
    params: dict = {}

    flat_ids = None if all_ids is None else (all_ids.tolist() if all_ids.dtype == object else all_ids)
    if output is not None:
        exact = FlatIndex.from_npy(output, mmap=True, threads=threads, ids=flat_ids if kind == "flat" else None)
    else:
        exact = FlatIndex(dim, threads=threads)
        exact.add(vectors, ids=flat_ids if kind == "flat" else None)
    if kind == "flat":
        index = exact  # it keeps (and saves) its ids itself
    else:
        faiss = _faiss()
        faiss.omp_set_num_threads(threads)
        if kind in ("ivf_flat", "ivf_pq"):
            nlist = _positive("nlist", nlist) if nlist is not None else max(1, min(int(4 * np.sqrt(n)), n // 39))
            nprobe = min(_positive("nprobe", nprobe), nlist)
            quantizer = faiss.IndexFlatIP(dim)
            if kind == "ivf_flat":
                index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
                params = {"nlist": nlist, "nprobe": nprobe}
                need = nlist
            else:
                if m is None:
                    m = max(d for d in range(1, max(dim // 8, 1) + 1) if dim % d == 0)
                m, nbits = _positive("m", m), _positive("nbits", nbits)
                if dim % m:
                    raise ValueError(f"m={m} must divide the dimension {dim}")
                if nbits > 16:
                    raise ValueError(f"nbits must be at most 16, got {nbits}")
                index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits, faiss.METRIC_INNER_PRODUCT)
                params = {"nlist": nlist, "nprobe": nprobe, "m": m, "nbits": nbits}
                need = max(nlist, 1 << nbits)
            train_n = min(n, _positive("train_size", train_size) if train_size is not None else max(256 * nlist, need))
            if train_n < need:
                raise ValueError(f"{kind} with {params} needs at least {need} training vectors, got {train_n} "
                                 f"(of {n}): lower nlist{' or nbits' if kind == 'ivf_pq' else ''}")
            rows = np.sort(rng.choice(n, size=train_n, replace=False))
            index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
            index.nprobe = nprobe
        else:
            index = faiss.IndexHNSWFlat(dim, _positive("M", M), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = _positive("efConstruction", efConstruction)
            index.hnsw.efSearch = _positive("efSearch", efSearch)
            params = {"M": M, "efConstruction": efConstruction, "efSearch": efSearch}
        for first in range(0, n, 1 << 16):  # labels are row positions
            index.add(np.ascontiguousarray(vectors[first:first + (1 << 16)], dtype=np.float32))
    build_seconds = time.perf_counter() - start

    if queries is None:
        sample = np.sort(rng.choice(n, size=min(_positive("n_queries", n_queries), n), replace=False))
        q = np.ascontiguousarray(vectors[sample], dtype=np.float32)
    else:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != dim:
            raise ValueError(f"queries must be [nq, {dim}], got shape {q.shape}")
    _, exact_positions = _exact_positions(exact, q, k, threads)
    t0 = time.perf_counter()
    if kind == "flat":
        _, found = _exact_positions(index, q, k, threads)
    else:
        _, found = index.search(q, k)
    search_seconds = time.perf_counter() - t0
    return BuiltIndex(kind=kind, index=index, ids=None if kind == "flat" else all_ids, params=params,
                      ntotal=n, dim=dim, recall=recall_at_k(found, exact_positions, k), k=k,
                      build_seconds=build_seconds, search_seconds=search_seconds, n_queries=q.shape[0],
                      path=None if output is None else os.fspath(output))


def _exact_positions(index: FlatIndex, q: np.ndarray, k: int, threads: int):
    """Exact top-k as row positions (not ids), to compare with FAISS's labels."""
    from .. import _C

    return _C.flat_search(q, index._segments(), k, threads=threads)
