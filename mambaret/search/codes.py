"""Flat indexes over compressed embeddings: binary codes searched by Hamming distance (popcount)
and int8 codes searched by integer inner product, both in the C core, with optional rescoring of
the best candidates by float32 (or int8) vectors.

They keep :class:`~mambaret.search.index.FlatIndex`'s contract (ids, ``add`` / ``search`` / ``remove_ids``
/ ``save`` / ``load(mmap=...)``) and its result layout: ``(scores float32 [nq, k], ids [nq, k])``,
best first, padded with ``-inf`` and ``-1`` / ``None``. Without rescoring the scores are those of
the codes:

- :class:`BinaryFlatIndex`: ``dim - 2 * hamming`` (the inner product of the +-1 sign vectors;
  FAISS's ``IndexBinaryFlat`` returns the Hamming distances themselves);
- :class:`Int8FlatIndex`: the integer inner product of the int8 codes (exact up to 1024 dims).

Rescoring: :meth:`set_rescore_vectors` attaches one float32 vector per stored row, in storage
order (an array, or the path of a ``.npy`` file, memory-mapped so it stays on disk), or int8 codes
with their ranges. ``search(..., rescore_multiplier=m)`` then takes the ``m * k`` best rows by code
and returns the ``k`` best of those by the float inner product with the float query.
"""
from __future__ import annotations

import os
import warnings
from typing import Optional, Tuple

import numpy as np

from .. import _C
from .._native import default_threads
from .index import FlatIndex, _as_vectors, _check_k
from .quantization import binary_to_ubinary, calibrate_ranges, int8_steps, quantize_embeddings

__all__ = ["BinaryFlatIndex", "Int8FlatIndex"]

_CODE_KERNELS = ("auto", "portable", "avx2", "avx512", "reference")


def _check_multiplier(m) -> int:
    if m is None:
        return 0
    if isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, np.integer)) or m < 0:
        raise ValueError(f"rescore_multiplier must be a non-negative integer, got {m!r}")
    return int(m)


class _CodeFlatIndex(FlatIndex):
    """What both code indexes share: rescoring vectors and the search around the C kernels."""

    _precision = ""

    def _clear(self) -> None:
        super()._clear()
        self._rescore_vectors: Optional[np.ndarray] = None
        self._rescore_ranges: Optional[np.ndarray] = None

    def _to_codes(self, vectors, what: str) -> Tuple[np.ndarray, bool]:
        """(codes [n, width], whether the input was float) for vectors or queries."""
        raise NotImplementedError

    def _encode(self, vectors, what: str) -> np.ndarray:
        return self._to_codes(vectors, what)[0]

    def _code_search(self, codes, k, threads, kernel):
        raise NotImplementedError

    # ------------------------------------------------------------------ rescoring vectors

    def set_rescore_vectors(self, vectors, ranges=None) -> None:
        """Attaches the vectors that rescore candidates: float32 [ntotal, dim] in the order rows
        were stored (an array or a ``.npy`` path, opened memory-mapped), or int8 codes of them
        with the ``ranges`` they were quantized with. ``None`` detaches them."""
        if vectors is None:
            self._rescore_vectors = self._rescore_ranges = None
            return
        if isinstance(vectors, (str, os.PathLike)):
            path = os.fspath(vectors)
            try:
                vectors = np.load(path, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError, EOFError) as e:
                raise ValueError(f"{path}: not a readable .npy matrix ({e})") from None
        arr = np.asarray(vectors) if not isinstance(vectors, np.ndarray) else vectors
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise ValueError(f"rescore vectors must be [n, {self.dim}], got shape {arr.shape}")
        if arr.dtype == np.int8:
            if ranges is None:
                raise ValueError("int8 rescore vectors need the ranges they were quantized with")
            self._rescore_ranges = np.asarray(ranges, dtype=np.float32)
            if self._rescore_ranges.shape != (2, self.dim):
                raise ValueError(f"ranges must have shape (2, {self.dim})")
        elif arr.dtype == np.float32:
            self._rescore_ranges = None
        else:
            raise ValueError(f"rescore vectors must be float32 or int8, got {arr.dtype}")
        if not arr.flags.c_contiguous or not arr.dtype.isnative:
            raise ValueError("rescore vectors must be a C-ordered array in native byte order")
        self._rescore_vectors = arr

    @property
    def rescore_vectors(self) -> Optional[np.ndarray]:
        return self._rescore_vectors

    def remove_ids(self, ids) -> int:
        if self._rescore_vectors is not None:
            raise ValueError("remove_ids would shift the rows of the attached rescore vectors: "
                             "detach them first (set_rescore_vectors(None))")
        return super().remove_ids(ids)

    # ------------------------------------------------------------------ search

    def search(self, queries, k: int = 10, rescore_multiplier: Optional[int] = 4,
               threads: Optional[int] = None, kernel: str = "auto") -> Tuple[np.ndarray, np.ndarray]:
        """Top-k: ``(scores float32 [nq, k], ids [nq, k])``, best first.

        ``queries``: float vectors [nq, dim] (quantized like the stored rows), or codes in the
        index's precision. With rescore vectors attached and ``rescore_multiplier`` >= 1, the
        ``rescore_multiplier * k`` best rows by code are rescored with the float queries (then
        the queries must be float). Without rescore vectors (``set_rescore_vectors``) the
        multiplier, 4 by default, does nothing: the ranking is by codes alone. ``kernel`` picks the
        code kernel ("auto", "portable", "avx2", "avx512", "reference"), for tests and benchmarks.
        """
        k = _check_k(k)
        multiplier = _check_multiplier(rescore_multiplier)
        if kernel not in _CODE_KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(_CODE_KERNELS)}, got {kernel!r}")
        codes, is_float = self._to_codes(queries, "queries")
        threads = default_threads(threads if threads is not None else self.threads)
        rescore = self._rescore_vectors is not None and multiplier >= 1
        if not rescore:
            scores, positions = self._code_search(codes, k, threads, kernel)
            return scores, self._ids_at(positions)
        if not is_float:
            raise ValueError("rescoring needs float queries, got codes")
        if self._rescore_vectors.shape[0] != self.ntotal:
            raise ValueError(f"the rescore vectors have {self._rescore_vectors.shape[0]} rows, the index "
                             f"{self.ntotal}: attach vectors for every stored row")
        q = _as_vectors(queries, self.dim, "queries")
        _, candidates = self._code_search(codes, k * multiplier, threads, kernel)
        weights, bias = q, None
        if self._rescore_ranges is not None:
            # the int8 codes' bin centres: x ~ start + (code + 128.5) * step, so
            # q . x = sum q*(start + 128.5*step) + sum (q*step) * code
            starts, steps = int8_steps(self._rescore_ranges)
            weights = np.ascontiguousarray(q * steps, dtype=np.float32)
            bias = np.ascontiguousarray(q @ (starts + 128.5 * steps), dtype=np.float32)
        scores, positions = _C.rescore(weights, bias, candidates, self._rescore_vectors, k, threads=threads,
                                       reference=kernel == "reference")
        return scores, self._ids_at(positions)

    def to_faiss(self):
        raise NotImplementedError(f"{type(self).__name__} has no FAISS equivalent here")

    @classmethod
    def _dim_of_width(cls, width: int) -> int:
        return width

    @classmethod
    def from_npy(cls, path, mmap: bool = True, ids=None, threads: Optional[int] = None, dim: Optional[int] = None,
                 **kwargs):
        """An index over the codes [n, width] of a ``.npy`` file (``ubinary`` uint8 codes for
        :class:`BinaryFlatIndex`, ``int8`` codes for :class:`Int8FlatIndex`, which also needs
        ``ranges=``), searched in place when ``mmap``. ``dim`` defaults to what the width implies."""
        path = os.fspath(path)
        try:
            matrix = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{path}: not a readable .npy matrix ({e})") from None
        if matrix.ndim != 2 or matrix.dtype != cls._DTYPE or not matrix.flags.c_contiguous:
            raise ValueError(f"{path}: expected C-ordered {cls._DTYPE} codes [n, width], got {matrix.dtype} "
                             f"with shape {matrix.shape}")
        index = cls(dim if dim is not None else cls._dim_of_width(matrix.shape[1]), threads=threads, **kwargs)
        if cls._row_width(index.dim) != matrix.shape[1]:
            raise ValueError(f"{path}: codes of {matrix.shape[1]} bytes do not fit dimension {index.dim}")
        if not mmap:
            index.add(matrix, ids)
            return index
        labels, names = index._new_ids(ids, matrix.shape[0])
        index._mapped = matrix
        if matrix.shape[0]:
            index._commit_ids(labels, names)
        return index


class BinaryFlatIndex(_CodeFlatIndex):
    """Exact Hamming search over binary embeddings of ``dim`` dimensions (one bit each, x > 0),
    stored packed, ``ceil(dim / 8)`` bytes a vector: 32x smaller than float32.

    ``add`` and ``search`` take float vectors [n, dim] (binarised here) or codes from
    :func:`mambaret.quantize_embeddings`: ``ubinary`` (uint8) or ``binary`` (int8) [n, dim / 8].
    """

    _MAGIC = b"MRBINFIX"
    _DTYPE = np.dtype(np.uint8)
    _precision = "ubinary"

    @classmethod
    def _row_width(cls, dim: int) -> int:
        return (dim + 7) // 8

    @classmethod
    def _dim_of_width(cls, width: int) -> int:
        return 8 * width

    def _to_codes(self, vectors, what):
        width = self._row_width(self.dim)
        arr = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors)
        if arr.dtype in (np.uint8, np.int8):
            if arr.ndim == 1:
                arr = arr.reshape(1, -1)
            if arr.ndim != 2 or arr.shape[1] != width:
                raise ValueError(f"{what}: binary codes must be [n, {width}] bytes, got shape {arr.shape}")
            codes = binary_to_ubinary(arr) if arr.dtype == np.int8 else np.ascontiguousarray(arr)
            return codes, False
        x = _as_vectors(arr, self.dim, what)
        return np.packbits(x > 0, axis=-1), True

    def _code_search(self, codes, k, threads, kernel):
        scores, positions = _C.hamming_search(codes, self._segments(), k, threads=threads, kernel=kernel)
        pad_bits = 8 * self._row_width(self.dim) - self.dim  # packbits' zero padding agrees always
        if pad_bits:
            scores -= np.float32(pad_bits)
        return scores, positions

    def hamming(self, scores: np.ndarray) -> np.ndarray:
        """The Hamming distances behind code scores (``(dim - score) / 2``, int32; -1 for padding)."""
        out = np.full(scores.shape, -1, dtype=np.int32)
        found = np.isfinite(scores)
        out[found] = ((self.dim - scores[found]) / 2).astype(np.int32)
        return out

    def to_faiss(self):
        """A ``faiss.IndexBinaryFlat`` (dim a multiple of 8) with the same codes; ids as in
        :meth:`FlatIndex.to_faiss`."""
        if self.dim % 8:
            raise ValueError("faiss binary indexes need a dimension that is a multiple of 8")
        return FlatIndex.to_faiss(self)  # skips the code indexes' refusal above it

    def _faiss_flat(self, faiss):
        return faiss.IndexBinaryFlat(self.dim), faiss.IndexBinaryIDMap2


class Int8FlatIndex(_CodeFlatIndex):
    """Exact integer inner-product search over int8 embeddings (sentence-transformers' int8
    quantization, per-dimension ranges), one byte a dimension: 4x smaller than float32.

    The ranges ([2, dim]: mins, maxes) are given here or computed by :meth:`train` from a
    sample of float embeddings; float vectors added or searched are quantized with them.
    """

    _MAGIC = b"MRI8FLIX"
    _DTYPE = np.dtype(np.int8)
    _precision = "int8"

    def __init__(self, dim: int, ranges=None, threads: Optional[int] = None):
        super().__init__(dim, threads=threads)
        self.ranges: Optional[np.ndarray] = None
        if ranges is not None:
            self._set_ranges(ranges)

    def _set_ranges(self, ranges) -> None:
        r = np.asarray(ranges)
        if r.shape != (2, self.dim) or r.dtype.kind not in "fiu" or not np.isfinite(r).all():
            raise ValueError(f"ranges must be finite numbers of shape (2, {self.dim}), got {r.shape}")
        self.ranges = r.astype(np.float32)

    @property
    def is_trained(self) -> bool:
        return self.ranges is not None

    def train(self, calibration_embeddings, sample_size: Optional[int] = 100_000, seed: int = 0) -> None:
        """Sets the ranges from (a random sample of) float embeddings; only before any add."""
        if self.ntotal:
            raise ValueError("the ranges cannot change once codes are stored")
        x = np.asarray(calibration_embeddings) if not isinstance(calibration_embeddings, np.ndarray) \
            else calibration_embeddings
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"calibration embeddings must be [n, {self.dim}], got shape {x.shape}")
        if x.shape[0] < 100:
            warnings.warn(f"int8 ranges from only {x.shape[0]} embeddings; more make steadier ranges",
                          RuntimeWarning, stacklevel=2)
        self.ranges = calibrate_ranges(x, sample_size=sample_size, seed=seed)

    def _to_codes(self, vectors, what):
        arr = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors)
        if arr.dtype == np.int8:
            if arr.ndim == 1:
                arr = arr.reshape(1, -1)
            if arr.ndim != 2 or arr.shape[1] != self.dim:
                raise ValueError(f"{what}: int8 codes must be [n, {self.dim}], got shape {arr.shape}")
            return np.ascontiguousarray(arr), False
        if arr.dtype == np.uint8:
            raise ValueError(f"{what}: uint8 codes are not searched here; use precision='int8'")
        x = _as_vectors(arr, self.dim, what)
        if self.ranges is None:
            raise ValueError("this Int8FlatIndex has no ranges: pass ranges= or call train() first")
        return quantize_embeddings(x, "int8", ranges=self.ranges), True

    def _code_search(self, codes, k, threads, kernel):
        return _C.int8_search(codes, self._segments(), k, threads=threads, kernel=kernel)

    @classmethod
    def _extra_state_bytes(cls, dim: int) -> int:
        return 8 + 2 * dim * 4  # a trained flag, then the ranges

    def _extra_state(self) -> bytes:
        trained = np.array([self.ranges is not None], dtype="<u8").tobytes()
        ranges = self.ranges if self.ranges is not None else np.zeros((2, self.dim), dtype=np.float32)
        return trained + np.ascontiguousarray(ranges, dtype="<f4").tobytes()

    def _restore_extra_state(self, blob: bytes) -> None:
        trained = np.frombuffer(blob[:8], dtype="<u8")[0]
        if trained not in (0, 1):
            raise ValueError("corrupt Int8FlatIndex file (ranges flag)")
        ranges = np.frombuffer(blob[8:], dtype="<f4").reshape(2, self.dim)
        if trained:
            if not np.isfinite(ranges).all():
                raise ValueError("corrupt Int8FlatIndex file (ranges)")
            self.ranges = ranges.astype(np.float32)
