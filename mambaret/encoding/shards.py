"""Embedding shards on disk: a folder of Parquet files of ``id`` + ``embedding`` rows.

Layout written by :class:`ShardWriter` (and :func:`mambaret.encoding.distributed.write_shards`)::

    folder/part-00000.parquet   id (string or int64), embedding (fixed-size list of float32)
    folder/part-00001.parquet
    folder/_manifest.json       {"format": "mambaret-shards", "dim": d, "rows": n, "shards": [...]}

Crash safety: a shard is written under a temporary name and renamed once complete and synced,
and the manifest, written last (the same way), is what marks the folder complete. A reader
refuses a folder without it, and checks every shard's row count and dimension against it, so a
partial or corrupt folder raises ``ValueError`` instead of being read short.

Also readable as "shards" by :func:`iter_embedding_shards`: a float32 array, a ``.npy`` file
(memory-mapped), a single ``.parquet`` file, or a list of any of these.
"""
from __future__ import annotations

import json
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["ShardWriter", "read_manifest", "iter_embedding_shards", "count_rows", "load_shards"]

MANIFEST = "_manifest.json"
_FORMAT = "mambaret-shards"


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ImportError("Parquet shards need pyarrow: pip install pyarrow "
                          "(or pip install \".[ray]\" in the mambaret repository)") from None
    return pyarrow


def _write_atomically(path: str, write) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class ShardWriter:
    """Writes shards of (ids, embeddings) in order into an empty (or new) folder; ``close()``
    writes the manifest. Used as a context manager, an exception leaves no manifest."""

    def __init__(self, folder, rows_per_shard: int = 100_000):
        if rows_per_shard <= 0:
            raise ValueError(f"rows_per_shard must be positive, got {rows_per_shard}")
        self.folder = os.fspath(folder)
        os.makedirs(self.folder, exist_ok=True)
        leftovers = [n for n in os.listdir(self.folder) if n.endswith(".parquet") or n == MANIFEST]
        if leftovers:
            raise ValueError(f"{self.folder}: already holds shards ({leftovers[0]}); write into an empty folder")
        self.rows_per_shard = rows_per_shard
        self.shards: List[dict] = []
        self.dim: Optional[int] = None
        self.id_type: Optional[str] = None
        self._pending_ids: list = []
        self._pending: List[np.ndarray] = []
        self._pending_rows = 0

    def write(self, ids: Sequence, embeddings) -> None:
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or len(ids) != emb.shape[0]:
            raise ValueError(f"got {len(ids)} ids for embeddings of shape {emb.shape}")
        if self.dim is None:
            self.dim = emb.shape[1]
        elif emb.shape[1] != self.dim:
            raise ValueError(f"embeddings of dimension {emb.shape[1]} after {self.dim}")
        self._pending_ids.extend(ids.tolist() if isinstance(ids, np.ndarray) else list(ids))
        self._pending.append(emb)
        self._pending_rows += emb.shape[0]
        while self._pending_rows >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def _flush(self, rows: int) -> None:
        pa = _pyarrow()
        emb = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        ids, self._pending_ids = self._pending_ids[:rows], self._pending_ids[rows:]
        rest = emb[rows:]
        self._pending, self._pending_rows = ([rest] if rest.shape[0] else []), rest.shape[0]
        emb = np.ascontiguousarray(emb[:rows])
        id_array = pa.array(ids)
        if not (pa.types.is_string(id_array.type) or pa.types.is_large_string(id_array.type)
                or pa.types.is_integer(id_array.type)):
            raise ValueError(f"ids must be strings or integers, got {id_array.type}")
        if pa.types.is_integer(id_array.type):
            id_array = id_array.cast(pa.int64())
        kind = "int" if pa.types.is_integer(id_array.type) else "str"
        if self.id_type is None:
            self.id_type = kind
        elif kind != self.id_type:
            raise ValueError("ids mix strings and integers across shards")
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), type=pa.float32()), self.dim)
        table = pa.table({"id": id_array, "embedding": vectors})
        name = f"part-{len(self.shards):05d}.parquet"
        _write_atomically(os.path.join(self.folder, name), lambda tmp: pa.parquet.write_table(table, tmp))
        self.shards.append({"file": name, "rows": rows})

    def close(self) -> dict:
        """Writes what is pending and the manifest; returns the manifest."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        manifest = {"format": _FORMAT, "version": 1, "dim": self.dim, "rows": sum(s["rows"] for s in self.shards),
                    "id_type": self.id_type, "shards": self.shards}

        def write(tmp):
            with open(tmp, "w") as f:
                json.dump(manifest, f, indent=1)

        _write_atomically(os.path.join(self.folder, MANIFEST), write)
        return manifest

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.close()


def read_manifest(folder) -> dict:
    """The manifest of a complete shard folder; ``ValueError`` when it is missing or corrupt."""
    folder = os.fspath(folder)
    path = os.path.join(folder, MANIFEST)
    if not os.path.exists(path):
        raise ValueError(f"{folder}: no {MANIFEST}: not a shard folder, or its writing did not finish")
    try:
        with open(path) as f:
            manifest = json.load(f)
        ok = (manifest.get("format") == _FORMAT and isinstance(manifest.get("shards"), list)
              and all(isinstance(s.get("file"), str) and isinstance(s.get("rows"), int) for s in manifest["shards"]))
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{path}: corrupt manifest ({e})") from None
    if not ok:
        raise ValueError(f"{path}: corrupt manifest")
    return manifest


def _read_parquet(path: str, dim: Optional[int] = None, rows: Optional[int] = None):
    pa = _pyarrow()
    try:
        table = pa.parquet.read_table(path, columns=["id", "embedding"])
    except (OSError, pa.ArrowException, KeyError) as e:
        raise ValueError(f"{path}: unreadable shard ({e})") from None
    column = table.column("embedding").combine_chunks()
    if table.num_rows == 0:
        emb = np.empty((0, dim or 0), dtype=np.float32)
    else:
        if not (pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type)
                or pa.types.is_large_list(column.type)):
            raise ValueError(f"{path}: the embedding column is {column.type}, not a list of floats")
        values = column.flatten().to_numpy(zero_copy_only=False)
        if values.size % table.num_rows:
            raise ValueError(f"{path}: embeddings of unequal length")
        emb = np.ascontiguousarray(values.reshape(table.num_rows, -1), dtype=np.float32)
    if rows is not None and table.num_rows != rows:
        raise ValueError(f"{path}: {table.num_rows} rows, the manifest says {rows}")
    if dim is not None and table.num_rows and emb.shape[1] != dim:
        raise ValueError(f"{path}: embeddings of dimension {emb.shape[1]}, the manifest says {dim}")
    return np.asarray(table.column("id").to_pylist(), dtype=object if not pa.types.is_integer(
        table.column("id").type) else np.int64), emb


def iter_embedding_shards(source, ids=None) -> Iterator[Tuple[Optional[np.ndarray], np.ndarray]]:
    """Yields (ids or None, float32 embeddings [rows, dim]) shard by shard, in order."""
    if isinstance(source, np.ndarray):
        if source.ndim != 2:
            raise ValueError(f"embeddings must be 2-D, got shape {source.shape}")
        yield (None if ids is None else np.asarray(ids)), source
        return
    if isinstance(source, (list, tuple)):
        if ids is not None:
            raise ValueError("ids= goes with one array of embeddings, not with shards")
        for item in source:
            yield from iter_embedding_shards(item)
        return
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"expected embeddings, a .npy / .parquet path, a shard folder or a list of them, "
                         f"got {type(source).__name__}")
    path = os.fspath(source)
    npy_files = _npy_folder(path)
    if npy_files:
        if ids is not None:
            raise ValueError("ids= goes with one array of embeddings, not with a folder of .npy files")
        for name in npy_files:
            yield from iter_embedding_shards(name)
    elif os.path.isdir(path):
        manifest = read_manifest(path)
        for shard in manifest["shards"]:
            yield _read_parquet(os.path.join(path, shard["file"]), manifest.get("dim"), shard["rows"])
    elif path.endswith(".npy"):
        try:
            matrix = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{path}: not a readable .npy matrix ({e})") from None
        if matrix.ndim != 2:
            raise ValueError(f"{path}: expected a [n, dim] matrix, got shape {matrix.shape}")
        yield (None if ids is None else np.asarray(ids)), matrix
    elif path.endswith(".parquet"):
        yield _read_parquet(path)
    elif not os.path.exists(path):
        raise ValueError(f"{path}: no such file or folder")
    else:
        raise ValueError(f"{path}: expected a .npy file, a .parquet file or a shard folder")


def _npy_folder(path: str) -> list[str] | None:
    """The .npy files of a folder without a Parquet manifest, in name order (name them
    part-00000.npy, part-00001.npy, ... so that the order is the rows' order); None otherwise."""
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, MANIFEST)):
        return None
    names = sorted(n for n in os.listdir(path) if n.endswith(".npy") and not n.startswith("."))
    return [os.path.join(path, n) for n in names] or None


def count_rows(source) -> int:
    """Rows of a source of :func:`iter_embedding_shards`, from metadata only (no vectors read)."""
    if isinstance(source, np.ndarray):
        return source.shape[0] if source.ndim == 2 else 0
    if isinstance(source, (list, tuple)):
        return sum(count_rows(item) for item in source)
    path = os.fspath(source)
    npy_files = _npy_folder(path)
    if npy_files:
        return sum(count_rows(name) for name in npy_files)
    if os.path.isdir(path):
        return int(sum(s["rows"] for s in read_manifest(path)["shards"]))
    if path.endswith(".npy"):
        try:
            return int(np.load(path, mmap_mode="r", allow_pickle=False).shape[0])
        except (ValueError, OSError, EOFError, IndexError) as e:
            raise ValueError(f"{path}: not a readable .npy matrix ({e})") from None
    if path.endswith(".parquet"):
        pa = _pyarrow()
        try:
            return pa.parquet.ParquetFile(path).metadata.num_rows
        except (OSError, pa.ArrowException) as e:
            raise ValueError(f"{path}: unreadable shard ({e})") from None
    return 0


def load_shards(source) -> Tuple[np.ndarray, np.ndarray]:
    """All (ids, embeddings) of a shard folder (or any source of :func:`iter_embedding_shards`)."""
    ids, parts = [], []
    for shard_ids, emb in iter_embedding_shards(source):
        parts.append(np.asarray(emb, dtype=np.float32))
        if shard_ids is not None:
            ids.append(shard_ids)
    emb = np.concatenate(parts) if parts else np.empty((0, 0), dtype=np.float32)
    return (np.concatenate(ids) if ids else np.arange(emb.shape[0])), emb
