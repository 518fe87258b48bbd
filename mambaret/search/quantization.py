"""Compressed embeddings: int8 / uint8 (per-dimension ranges) and binary / ubinary (sign bits).

:func:`quantize_embeddings` gives the same arrays as sentence-transformers' function of the same
name for the same ranges, so codes made by either library can be searched by the other:

- ``"int8"`` / ``"uint8"``: each dimension's [min, max] range is cut into 255 steps; a value's
  code is ``clip(floor((x - min) / step), 0, 255)`` (minus 128 for int8). The ranges come from
  ``ranges`` ([2, dim]: mins, maxes), else from ``calibration_embeddings``, else from the
  embeddings themselves. :func:`calibrate_ranges` computes them from a random sample.
- ``"binary"`` / ``"ubinary"``: one bit per dimension (``x > 0``), packed 8 per byte, most
  significant bit first (``numpy.packbits``); ``binary`` stores each byte minus 128 as int8.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["PRECISIONS", "calibrate_ranges", "quantize_embeddings", "binary_to_ubinary", "int8_steps"]

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
_CHUNK_ROWS = 1 << 16  # element-wise work is done in row chunks so memory stays bounded


def calibrate_ranges(embeddings, sample_size: Optional[int] = 100_000, seed: int = 0) -> np.ndarray:
    """Per-dimension [min; max] of the embeddings ([2, dim] float32), computed over a random
    sample of ``sample_size`` rows (all rows when None or when there are fewer)."""
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"calibration needs a 2-D array of at least 2 embeddings, got shape {x.shape}")
    if x.dtype.kind != "f":
        raise ValueError(f"calibration embeddings must be floating point, got {x.dtype}")
    if sample_size is not None and sample_size < x.shape[0]:
        rows = np.sort(np.random.default_rng(seed).choice(x.shape[0], size=sample_size, replace=False))
        x = x[rows]
    lo = np.full(x.shape[1], np.inf, dtype=x.dtype)
    hi = np.full(x.shape[1], -np.inf, dtype=x.dtype)
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        chunk = np.asarray(x[start:start + _CHUNK_ROWS])
        np.minimum(lo, chunk.min(axis=0), out=lo)
        np.maximum(hi, chunk.max(axis=0), out=hi)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError("calibration embeddings contain NaN or infinite values")
    return np.vstack((lo, hi)).astype(np.float32)


def _check_ranges(ranges, dim: int) -> np.ndarray:
    r = np.asarray(ranges)
    if r.shape != (2, dim):
        raise ValueError(f"ranges must have shape (2, {dim}) (mins, maxes), got {r.shape}")
    if r.dtype.kind not in "fiu" or not np.isfinite(r).all():
        raise ValueError("ranges must be finite numbers")
    return r.astype(np.float32, copy=False)


def int8_steps(ranges: np.ndarray):
    """(starts, steps) of int8 / uint8 codes for float32 ranges [2, dim] (zero-width ranges
    get a step of 1, as in sentence-transformers)."""
    starts = ranges[0, :]
    steps = (ranges[1, :] - starts) / 255
    return starts, np.where(steps == 0, 1, steps)


def quantize_embeddings(embeddings, precision: str = "int8", ranges=None,
                        calibration_embeddings=None) -> np.ndarray:
    """Codes of float embeddings [n, dim] (or one [dim] embedding) in the given precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    x = np.asarray(embeddings)
    if x.dtype.kind not in "fiu" or x.dtype in (np.int8, np.uint8):
        raise ValueError(f"embeddings to quantize must be floating point, got {x.dtype}")
    if x.ndim not in (1, 2):
        raise ValueError(f"embeddings must be 1-D or 2-D, got shape {x.shape}")
    if precision == "float32":
        return x.astype(np.float32)
    if precision.endswith("binary"):
        bits = np.packbits(x > 0, axis=-1)
        return bits if precision == "ubinary" else (bits - 128).astype(np.int8)

    dim = x.shape[-1]
    if ranges is None:
        source = x if calibration_embeddings is None else np.asarray(calibration_embeddings)
        if source.ndim == 1 or source.shape[0] < 2:
            raise ValueError(f"cannot compute {precision} ranges from a single embedding: pass ranges= or "
                             "calibration_embeddings= from a representative sample")
        if source.shape[-1] != dim:
            raise ValueError(f"calibration embeddings have dimension {source.shape[-1]}, the embeddings {dim}")
        ranges = np.vstack((np.min(source, axis=0), np.max(source, axis=0)))
    starts, steps = int8_steps(_check_ranges(ranges, dim))
    out = np.empty(x.shape, dtype=np.int8 if precision == "int8" else np.uint8)
    rows = x.reshape(-1, dim)
    flat_out = out.reshape(-1, dim)
    for start in range(0, rows.shape[0], _CHUNK_ROWS):
        codes = np.clip(np.floor((rows[start:start + _CHUNK_ROWS] - starts) / steps), 0, 255)
        flat_out[start:start + _CHUNK_ROWS] = (codes - 128) if precision == "int8" else codes
    return out


def binary_to_ubinary(codes: np.ndarray) -> np.ndarray:
    """sentence-transformers' int8 ``binary`` codes as the packed bits (``ubinary``)."""
    return np.ascontiguousarray(codes).view(np.uint8) ^ np.uint8(0x80)
