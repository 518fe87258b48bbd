"""FlatIndex: exact inner-product search over float32 vectors, like ``faiss.IndexFlatIP``.

Search runs in the C core (blocked BLAS GEMM + per-query top-k, threaded, GIL released).
Results follow FAISS's contract: ``scores`` float32 [nq, k] and ``ids`` [nq, k], best first, equal
scores in insertion order, padded with ``-inf`` and ``-1`` when k exceeds ``ntotal``.

Ids, one rule per index, fixed by the first ``add``:

- **integer ids** (``ids=None`` or int64 ids): ``search`` returns an int64 array. Without ids a
  vector's id is its insertion number (0, 1, 2, ... as in faiss, continuing after the largest id so
  far). Ids stay attached to their vectors after ``remove_ids`` (faiss.IndexFlat renumbers).
- **string ids** (``ids`` a list of str): ``search`` returns an object array of str, ``None`` in
  padded slots. Internally each string gets an int64 label (its insertion number); see
  :meth:`FlatIndex.labels` and :meth:`FlatIndex.to_faiss`.

Ids must be unique (``ValueError`` otherwise); integer ids must be >= 0 (-1 is the padding).

Storage: vectors added live in memory; :meth:`FlatIndex.from_npy` and ``load(..., mmap=True)``
search a memory-mapped matrix in place, so an index larger than RAM is read block by block.

Threads: one index may be shared. ``search`` calls run together; ``add``, ``remove_ids`` and
``reset`` wait for the searches in flight and run alone (a readers-writer lock), so a search
sees the index as it was before or after each add, never halfway. A waiting add holds back new
searches, so a stream of searches cannot starve it.

Files: ``save`` replaces its file atomically (temporary file in the same folder, fsync, rename):
a process killed during a save leaves the previous file intact, and the next save to that path
removes the killed save's temporary file.

Memory-mapped files: reading a page of a mapped file that another process has truncated kills
the process with SIGBUS. Before each search of a mapped index the file's size is checked (through
a descriptor held on the very file that was mapped) and a ``RuntimeError`` is raised if it no
longer covers the vectors. What remains: a truncation that happens *during* a search still takes
the process down (no check can close that window), and a file rewritten in place at the same size
is searched as it now is. Replacing the file by rename (as ``save`` does) is safe: the index keeps
searching the file it mapped; load the path again to see the new one.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np

from .. import _C
from .._atomic import atomic_path
from .._memory import check_allocation
from .._native import default_threads
from .._rwlock import ReadWriteLock

__all__ = ["FlatIndex"]

_MAGIC = b"MRFLATIX"
# every index file's magic -> the class that reads it (codes.py's classes are in it too)
_CLASS_OF_MAGIC = {b"MRFLATIX": "FlatIndex", b"MRBINFIX": "BinaryFlatIndex", b"MRI8FLIX": "Int8FlatIndex"}


def _index_class_of(magic: bytes) -> str | None:
    return _CLASS_OF_MAGIC.get(magic)
_VERSION = 1
_KIND_INT, _KIND_STR = 0, 1
# magic, version, id kind, dim, ntotal, next label, string-table bytes; padded to 64 bytes so
# the vectors that follow can be memory-mapped with float32 alignment
_HEADER = struct.Struct("<8sIIQQqQ")
_HEADER_BYTES = 64
_CHUNK_ROWS = 1 << 16  # rows per chunk when copying, checking or writing vectors
_MAX_DIM = 1 << 20


def _as_vectors(x, dim: int, what: str) -> np.ndarray:
    """A C-contiguous float32 [n, dim] copy-or-view of x; one vector may be given as 1-D."""
    try:
        arr = np.asarray(x)
    except Exception as e:  # e.g. ragged lists
        raise ValueError(f"{what} must be a 2-D array of numbers: {e}") from None
    if arr.ndim == 1 and arr.size == dim and dim > 0:
        arr = arr.reshape(1, dim)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D [n, {dim}], got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise ValueError(f"{what} have dimension {arr.shape[1]}, the index has {dim}")
    if arr.dtype.kind not in "fiu" or arr.dtype.kind == "b":
        raise ValueError(f"{what} must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    _check_finite(arr, what)
    return arr


def _check_finite(arr: np.ndarray, what: str) -> None:
    for start in range(0, arr.shape[0], _CHUNK_ROWS):
        if not np.isfinite(arr[start:start + _CHUNK_ROWS]).all():
            raise ValueError(f"{what} contain NaN or infinite values")


class _MappedFile:
    """The file under a memory-mapped matrix: a descriptor held on the very file that was mapped,
    so its size can be checked before each read (a mapped page past the end raises SIGBUS)."""

    def __init__(self, path: str):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        self.needed = 0

    def confirm(self, needed: int) -> None:
        """Call after mapping ``path``: fails if the path now names another file (replaced
        between the open and the map), so the descriptor and the mapping see the same file."""
        held, named = os.fstat(self.fd), os.stat(self.path)
        if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino):
            raise ValueError(f"{self.path}: the file was replaced while it was being opened; open it again")
        self.needed = needed
        self.check()

    def check(self) -> None:
        size = os.fstat(self.fd).st_size
        if size < self.needed:
            raise RuntimeError(f"{self.path}: the memory-mapped file was truncated to {size} bytes after "
                               f"it was opened ({self.needed} needed); reading it would crash the process. "
                               f"Load the index again.")

    def __del__(self):
        fd, self.fd = getattr(self, "fd", -1), -1
        if fd >= 0:
            os.close(fd)


def _check_k(k) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return int(k)


class FlatIndex:
    """Exact maximum-inner-product index over ``dim``-dimensional float32 vectors.

    For cosine similarity, add and search L2-normalised vectors (``normalize_embeddings=True``).
    ``threads`` (default: OMP_NUM_THREADS, else the CPUs) bounds the search's threads.
    """

    # what the vectors are stored as; subclasses over compressed codes change these hooks
    _MAGIC = _MAGIC
    _DTYPE = np.dtype("<f4")

    @classmethod
    def _row_width(cls, dim: int) -> int:
        """Stored elements per vector."""
        return dim

    def _encode(self, vectors, what: str) -> np.ndarray:
        """Vectors as stored rows [n, width] of _DTYPE."""
        return _as_vectors(vectors, self.dim, what)

    @classmethod
    def _extra_state_bytes(cls, dim: int) -> int:
        """Bytes of subclass state saved after the ids (0 for float vectors)."""
        return 0

    def _extra_state(self) -> bytes:
        return b""

    def _restore_extra_state(self, blob: bytes) -> None:
        pass

    def __init__(self, dim: int, threads: Optional[int] = None):
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 0 < dim <= _MAX_DIM:
            raise ValueError(f"dim must be an integer in [1, {_MAX_DIM}], got {dim!r}")
        self.dim = int(dim)
        self.threads = default_threads(threads) if threads is not None else None
        self._lock = ReadWriteLock()
        self._clear()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Removes every vector (and forgets the id kind)."""
        with self._lock.writing():
            self._clear()

    def _clear(self) -> None:
        self._mapped: Optional[np.ndarray] = None  # read-only rows that come first
        self._mapped_file: Optional[_MappedFile] = None
        self._buffer = np.empty((0, self._row_width(self.dim)), dtype=self._DTYPE)  # owned rows, spare capacity
        self._size = 0  # rows of _buffer in use
        self._labels = np.empty(0, dtype=np.int64)
        self._next_label = 0
        self._label_set: Optional[set] = None  # built on the first explicit integer ids
        self._names: Optional[list] = None  # string ids by position, in string mode
        self._label_of_name: Optional[dict] = None

    def __getstate__(self):
        # a lock and a file descriptor do not travel; a mapped matrix travels as its values
        with self._lock.reading():
            state = dict(self.__dict__)
        del state["_lock"]
        state["_mapped_file"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = ReadWriteLock()

    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
        return self._mapped_rows + self._size

    def __len__(self) -> int:
        return self.ntotal

    @property
    def _mapped_rows(self) -> int:
        return 0 if self._mapped is None else self._mapped.shape[0]

    @property
    def string_ids(self) -> bool:
        """True when the index was built with string ids."""
        return self._names is not None

    def labels(self) -> np.ndarray:
        """The int64 label of every vector, in storage order (the ids faiss gets from
        :meth:`to_faiss`; in string mode, the internal numbers of the strings)."""
        with self._lock.reading():
            return self._labels.copy()

    def __repr__(self) -> str:
        kind = "str" if self.string_ids else "int"
        mapped = f", {self._mapped_rows} memory-mapped" if self._mapped is not None else ""
        return f"FlatIndex(dim={self.dim}, ntotal={self.ntotal}{mapped}, ids={kind})"

    # ------------------------------------------------------------------ adding and removing

    def add(self, vectors, ids: Optional[Sequence] = None) -> None:
        """Adds vectors [n, dim] (any real dtype; stored as float32), with optional ids."""
        x = self._encode(vectors, "vectors")
        n = x.shape[0]
        with self._lock.writing():
            labels, names = self._new_ids(ids, n)
            if n == 0:
                return
            self._reserve(self._size + n)
            self._buffer[self._size:self._size + n] = x
            self._size += n
            self._commit_ids(labels, names)

    def _new_ids(self, ids, n: int):
        """Validated (labels, names) for n new vectors; changes nothing."""
        if ids is None:
            if self.string_ids:
                raise ValueError("this index has string ids: add() needs ids for every vector")
            return np.arange(self._next_label, self._next_label + n, dtype=np.int64), None
        if isinstance(ids, (str, bytes)):
            raise ValueError("ids must be a sequence with one id per vector, not a single string")
        ids = list(ids) if not isinstance(ids, np.ndarray) else ids
        if len(ids) != n:
            raise ValueError(f"got {len(ids)} ids for {n} vectors")
        if n == 0:
            return np.empty(0, dtype=np.int64), ([] if self.string_ids else None)
        first = ids[0]
        if isinstance(first, (str, np.str_)):
            if self.ntotal and not self.string_ids:
                raise ValueError("this index has integer ids: string ids cannot be added to it")
            names = [str(i) for i in ids] if all(isinstance(i, (str, np.str_)) for i in ids) else None
            if names is None:
                raise ValueError("ids mix strings and other types")
            if len(set(names)) != n:
                raise ValueError("duplicate string ids in this add()")
            known = self._label_of_name or {}
            taken = next((name for name in names if name in known), None)
            if taken is not None:
                raise ValueError(f"duplicate string id {taken!r}: already in the index")
            return np.arange(self._next_label, self._next_label + n, dtype=np.int64), names
        if self.string_ids:
            raise ValueError("this index has string ids: integer ids cannot be added to it")
        arr = np.asarray(ids)
        if arr.dtype.kind not in "iu" or arr.ndim != 1:
            raise ValueError(f"ids must be strings or integers, got {arr.dtype}")
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise ValueError("integer ids must fit in int64")
        labels = arr.astype(np.int64)
        if labels.min() < 0:
            raise ValueError("integer ids must be >= 0 (-1 marks padding in results)")
        if np.unique(labels).size != n:
            raise ValueError("duplicate integer ids in this add()")
        existing = self._existing_label_set()
        taken = next((int(i) for i in labels if int(i) in existing), None)
        if taken is not None:
            raise ValueError(f"duplicate id {taken}: already in the index")
        return labels, None

    def _existing_label_set(self) -> set:
        if self._label_set is None:
            self._label_set = set(self._labels.tolist())
        return self._label_set

    def _commit_ids(self, labels: np.ndarray, names) -> None:
        self._labels = np.concatenate([self._labels, labels])
        self._next_label = max(self._next_label, int(labels.max()) + 1)
        if self._label_set is not None:
            self._label_set.update(labels.tolist())
        if names is not None:
            if self._names is None:
                self._names, self._label_of_name = [], {}
            self._names.extend(names)
            self._label_of_name.update(zip(names, labels.tolist()))

    def _reserve(self, rows: int) -> None:
        # doubling keeps many small adds linear in the total
        if rows <= self._buffer.shape[0]:
            return
        capacity = max(rows, 2 * self._buffer.shape[0], 1024)
        grown = np.empty((capacity, self._buffer.shape[1]), dtype=self._DTYPE)
        grown[:self._size] = self._buffer[:self._size]
        self._buffer = grown

    def remove_ids(self, ids: Iterable) -> int:
        """Removes the vectors with these ids (unknown ids are ignored); returns how many went.

        The others keep their ids and order. Vectors of a memory-mapped file cannot be removed.
        """
        with self._lock.writing():
            return self._remove_ids(ids)

    def _remove_ids(self, ids: Iterable) -> int:
        if isinstance(ids, (str, bytes)):
            ids = [ids]
        wanted = list(ids)
        if self.string_ids:
            bad = next((i for i in wanted if not isinstance(i, (str, np.str_))), None)
            if bad is not None:
                raise ValueError(f"this index has string ids, got {bad!r}")
            labels = [self._label_of_name[str(i)] for i in wanted if str(i) in self._label_of_name]
        else:
            bad = next((i for i in wanted if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer))), None)
            if bad is not None:
                raise ValueError(f"this index has integer ids, got {bad!r}")
            labels = wanted
        drop = np.isin(self._labels, np.asarray(labels, dtype=np.int64))
        count = int(drop.sum())
        if count == 0:
            return 0
        mapped = self._mapped_rows
        if drop[:mapped].any():
            raise ValueError("vectors stored in a memory-mapped file cannot be removed; "
                             "load the index into memory (mmap=False) first")
        keep = ~drop[mapped:]
        kept = self._buffer[:self._size][keep]
        self._buffer[:kept.shape[0]] = kept
        self._size = kept.shape[0]
        removed = self._labels[drop]
        self._labels = self._labels[~drop]
        if self._label_set is not None:
            self._label_set.difference_update(removed.tolist())
        if self._names is not None:
            gone = set(np.flatnonzero(drop).tolist())
            for p in gone:
                del self._label_of_name[self._names[p]]
            self._names = [name for p, name in enumerate(self._names) if p not in gone]
        return count

    # ------------------------------------------------------------------ search

    def _segments(self):
        segments = [] if self._mapped is None else [self._mapped]
        if self._size:
            segments.append(self._buffer[:self._size])
        return segments

    def search(self, queries, k: int = 10, threads: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: ``(scores float32 [nq, k], ids [nq, k])``.

        A 1-D query is searched as one row. ``ids`` is int64 (padding -1), or an object array
        of str (padding None) for an index with string ids.
        """
        k = _check_k(k)
        q = _as_vectors(queries, self.dim, "queries")
        # the results are the only allocation that grows with k: a k far beyond the index is
        # refused before it asks for more memory than the machine has
        check_allocation(q.shape[0] * k * (4 + 8), f"search results for {q.shape[0]} queries with k={k}")
        threads = default_threads(threads if threads is not None else self.threads)
        with self._lock.reading():
            if self._mapped_file is not None:
                self._mapped_file.check()
            scores, positions = _C.flat_search(q, self._segments(), k, threads=threads)
            return scores, self._ids_at(positions)

    def _ids_at(self, positions: np.ndarray):
        """The ids at these storage positions (-1: padding), a block of rows at a time so that a
        large batch of queries needs no full-size temporaries."""
        if self._names is None:
            ids = positions  # int64, ours: rewritten in place
            table = self._labels
        else:
            ids = np.full(positions.shape, None, dtype=object)
            table = np.asarray(self._names, dtype=object)
        for start in range(0, positions.shape[0], _CHUNK_ROWS):
            block, out = positions[start:start + _CHUNK_ROWS], ids[start:start + _CHUNK_ROWS]
            found = block >= 0
            out[found] = table[block[found]]
        return ids

    # ------------------------------------------------------------------ files

    @classmethod
    def from_npy(cls, path, mmap: bool = True, ids: Optional[Sequence] = None,
                 threads: Optional[int] = None) -> "FlatIndex":
        """An index over the float32 [n, dim] matrix of a ``.npy`` file.

        With ``mmap=True`` the file is searched in place (read-only), so it may exceed RAM;
        vectors added later live in memory after it.
        """
        path = os.fspath(path)
        try:
            mapped_file = _MappedFile(path) if mmap else None
            matrix = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 - numpy's header parser raises many kinds (TokenError, SyntaxError...)
            raise ValueError(f"{path}: not a readable .npy matrix ({type(e).__name__}: {e})") from None
        if matrix.ndim != 2 or matrix.dtype != np.float32 or not matrix.flags.c_contiguous:
            raise ValueError(f"{path}: expected a C-ordered float32 [n, dim] matrix, got "
                             f"{matrix.dtype} with shape {matrix.shape}"
                             f"{'' if matrix.flags.c_contiguous else ' (Fortran order)'}")
        index = cls(matrix.shape[1], threads=threads)
        if not mmap:
            index.add(matrix, ids)
            return index
        labels, names = index._new_ids(ids, matrix.shape[0])
        if isinstance(matrix, np.memmap):
            mapped_file.confirm(matrix.offset + matrix.nbytes)
            index._mapped_file = mapped_file
        index._mapped = matrix
        if matrix.shape[0]:
            index._commit_ids(labels, names)
        return index

    def save(self, path) -> None:
        """Writes the index to ``path``: vectors, ids, and a CRC32 of all. The file is replaced
        atomically (see the module's notes); errors name ``path``. Adds wait while it writes."""
        path = os.fspath(path)
        with self._lock.reading(), atomic_path(path) as tmp, open(tmp, "wb") as f:
            self._write(f)

    def _write(self, f) -> None:
        blob, offsets = b"", None
        if self._names is not None:
            encoded = [name.encode("utf-8") for name in self._names]
            offsets = np.zeros(len(encoded) + 1, dtype="<u8")
            np.cumsum([len(e) for e in encoded], out=offsets[1:])
            blob = b"".join(encoded)
        header = _HEADER.pack(self._MAGIC, _VERSION, _KIND_STR if self._names is not None else _KIND_INT,
                              self.dim, self.ntotal, self._next_label, len(blob))
        header = header.ljust(_HEADER_BYTES, b"\0")
        crc = 0

        def write(data) -> None:
            nonlocal crc
            view = memoryview(data).cast("B")
            crc = zlib.crc32(view, crc)
            f.write(view)

        write(header)
        for segment in self._segments():
            for start in range(0, segment.shape[0], _CHUNK_ROWS):
                write(np.ascontiguousarray(segment[start:start + _CHUNK_ROWS], dtype=self._DTYPE))
        write(np.ascontiguousarray(self._labels, dtype="<i8"))
        if offsets is not None:
            write(offsets)
            write(blob)
        write(self._extra_state())
        f.write(struct.pack("<I", crc))

    @classmethod
    def load(cls, path, mmap: bool = False, threads: Optional[int] = None) -> "FlatIndex":
        """Reads an index written by :meth:`save`, checking everything read; a truncated, corrupt
        or foreign file raises ``ValueError``. ``mmap=True`` searches the vectors in place."""
        path = os.fspath(path)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header = f.read(_HEADER_BYTES)
            if len(header) < _HEADER_BYTES:
                raise ValueError(f"{path}: truncated FlatIndex file ({size} bytes)")
            magic, version, kind, dim, ntotal, next_label, blob_bytes = _HEADER.unpack_from(header)
            if magic != cls._MAGIC:
                written_by = _index_class_of(magic)
                if written_by is not None:
                    raise ValueError(f"{path} is a file of {written_by}, not of {cls.__name__}: load it with "
                                     f"mambaret.{written_by}.load")
                raise ValueError(f"{path}: not a mambaret {cls.__name__} file (bad magic)")
            if version != _VERSION:
                raise ValueError(f"{path}: {cls.__name__} file version {version}, this mambaret reads {_VERSION}")
            if (kind not in (_KIND_INT, _KIND_STR) or not 0 < dim <= _MAX_DIM or next_label < 0
                    or header[_HEADER.size:].strip(b"\0")):
                raise ValueError(f"{path}: corrupt {cls.__name__} header")
            if kind == _KIND_INT and blob_bytes:
                raise ValueError(f"{path}: corrupt {cls.__name__} header (string table in an integer-id index)")
            width, extra_bytes = cls._row_width(dim), cls._extra_state_bytes(dim)
            vector_bytes = ntotal * width * cls._DTYPE.itemsize
            expected = (_HEADER_BYTES + vector_bytes + ntotal * 8
                        + ((ntotal + 1) * 8 + blob_bytes if kind == _KIND_STR else 0) + extra_bytes + 4)
            if size != expected:
                what = "truncated" if size < expected else "has trailing bytes or a corrupt header"
                raise ValueError(f"{path}: FlatIndex file {what} ({size} bytes, header implies {expected})")
            # one pass over the whole file for the checksum before trusting any of it
            crc = zlib.crc32(header)
            remaining = size - _HEADER_BYTES - 4
            while remaining:
                chunk = f.read(min(remaining, 1 << 24))
                if not chunk:
                    raise ValueError(f"{path}: truncated FlatIndex file")
                crc = zlib.crc32(chunk, crc)
                remaining -= len(chunk)
            (stored,) = struct.unpack("<I", f.read(4))
            if stored != crc:
                raise ValueError(f"{path}: FlatIndex file is corrupt (checksum mismatch)")
            f.seek(_HEADER_BYTES + vector_bytes)
            labels = np.frombuffer(f.read(ntotal * 8), dtype="<i8").astype(np.int64)
            names = None
            if kind == _KIND_STR:
                offsets = np.frombuffer(f.read((ntotal + 1) * 8), dtype="<u8")
                blob = f.read(blob_bytes)
                if offsets[0] != 0 or offsets[-1] != blob_bytes or (np.diff(offsets.astype(np.int64)) < 0).any():
                    raise ValueError(f"{path}: corrupt string-id table")
                try:
                    names = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(ntotal)]
                except UnicodeDecodeError:
                    raise ValueError(f"{path}: corrupt string-id table (not UTF-8)") from None
                if len(set(names)) != ntotal:
                    raise ValueError(f"{path}: corrupt string-id table (duplicate ids)")
            extra = f.read(extra_bytes)
            if ntotal and (labels.min() < 0 or np.unique(labels).size != ntotal or labels.max() >= next_label):
                raise ValueError(f"{path}: corrupt id table")
            mapped_file = None
            if mmap and ntotal:
                mapped_file = _MappedFile(path)
                vectors = np.memmap(path, dtype=cls._DTYPE, mode="r", offset=_HEADER_BYTES, shape=(ntotal, width))
                mapped_file.confirm(_HEADER_BYTES + vector_bytes)
                held = os.fstat(mapped_file.fd)
                if (held.st_dev, held.st_ino) != (os.fstat(f.fileno()).st_dev, os.fstat(f.fileno()).st_ino):
                    raise ValueError(f"{path}: the file was replaced while it was being read; load it again")
            elif mmap:
                vectors = np.empty((0, width), dtype=cls._DTYPE)
            else:
                f.seek(_HEADER_BYTES)
                vectors = np.empty((ntotal, width), dtype=cls._DTYPE)
                if ntotal and f.readinto(memoryview(vectors.reshape(-1)).cast("B")) != vector_bytes:
                    raise ValueError(f"{path}: truncated FlatIndex file")
        if vectors.dtype.kind == "f":
            _check_finite(vectors, f"{path}: vectors")
        index = cls(dim, threads=threads)
        index._restore_extra_state(extra)
        if mmap:
            index._mapped = vectors if ntotal else None
            index._mapped_file = mapped_file
        else:
            index._buffer, index._size = vectors, ntotal
        index._labels, index._next_label = labels, int(next_label)
        if names is not None:
            index._names, index._label_of_name = names, dict(zip(names, labels.tolist()))
        return index

    # ------------------------------------------------------------------ interop

    def to_faiss(self):
        """A faiss index holding the same vectors: ``IndexFlatIP``, wrapped in ``IndexIDMap2``
        when the ids are not simply 0..ntotal-1 (string ids travel as :meth:`labels`)."""
        try:
            import faiss
        except ImportError:
            raise ImportError("to_faiss() needs faiss: pip install faiss-cpu") from None
        with self._lock.reading():
            return self._to_faiss(faiss)

    def _faiss_flat(self, faiss):
        """(an empty faiss flat index for these rows, the id-map class that wraps it)."""
        return faiss.IndexFlatIP(self.dim), faiss.IndexIDMap2

    def _to_faiss(self, faiss):
        flat, id_map = self._faiss_flat(faiss)
        plain = np.array_equal(self._labels, np.arange(self.ntotal, dtype=np.int64))
        index = flat if plain else id_map(flat)
        position = 0
        for segment in self._segments():
            for start in range(0, segment.shape[0], _CHUNK_ROWS):
                chunk = np.ascontiguousarray(segment[start:start + _CHUNK_ROWS])
                if plain:
                    index.add(chunk)
                else:
                    index.add_with_ids(chunk, self._labels[position:position + chunk.shape[0]])
                position += chunk.shape[0]
        return index
