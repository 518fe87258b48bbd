"""Crash-safe saves (temporary file, fsync, rename), leftovers of killed saves, truncated mmaps."""
import glob
import os
import random
import signal
import time

import numpy as np
import pytest

from mambaret import FlatIndex
from mambaret._atomic import atomic_open, atomic_path, remove_stale_temporaries

fcntl = pytest.importorskip("fcntl")

ROWS, DIM = 1000, 128  # 0.5 MB of vectors: a save takes long enough to be killed in the middle


def version_index(v: int) -> FlatIndex:
    index = FlatIndex(DIM)
    index.add(np.full((ROWS, DIM), float(v), dtype=np.float32), ids=np.arange(ROWS) + 10 * v)
    return index


def saved_version(path) -> int:
    """Which version_index the file holds; fails unless it is exactly one of them."""
    index = FlatIndex.load(path)
    assert index.ntotal == ROWS
    v = int(index._buffer[0, 0])
    np.testing.assert_array_equal(index._buffer[:ROWS], np.full((ROWS, DIM), float(v), dtype=np.float32))
    np.testing.assert_array_equal(index.labels(), np.arange(ROWS) + 10 * v)
    return v


def temporaries(path) -> list:
    return glob.glob(glob.escape(str(path)) + ".tmp-*")


def test_killed_saves_leave_a_loadable_previous_version(tmp_path):
    path = tmp_path / "x.index"
    version_index(0).save(path)
    versions = [version_index(v) for v in range(1, 4)]
    rng = random.Random(0)
    seen, interrupted = set(), 0
    for _ in range(50):
        pid = os.fork()
        if pid == 0:  # the child saves in a loop until killed
            try:
                v = 0
                while True:
                    versions[v % 3].save(path)
                    v += 1
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.0, 0.08))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        seen.add(saved_version(path))
        interrupted += bool(temporaries(path))
    assert seen <= {0, 1, 2, 3}
    # the next save removes what the killed ones left
    version_index(5).save(path)
    assert saved_version(path) == 5 and temporaries(path) == []
    print(f"50 kills, {interrupted} in the middle of a write, versions seen {sorted(seen)}")


def test_missing_folder_error_names_the_users_path(tmp_path):
    path = tmp_path / "no" / "such" / "x.index"
    with pytest.raises(FileNotFoundError) as info:
        version_index(1).save(path)
    assert str(path) in str(info.value) and ".tmp" not in str(info.value)
    assert info.value.filename == str(path)


def test_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write(b"new, half")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old" and temporaries(path) == []
    with atomic_open(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"


def test_only_abandoned_temporaries_are_removed(tmp_path):
    path = tmp_path / "f.bin"
    abandoned = tmp_path / "f.bin.tmp-dead0001"
    abandoned.write_bytes(b"left by a killed save")
    live = tmp_path / "f.bin.tmp-live0001"
    live.write_bytes(b"being written")
    other = tmp_path / "g.bin.tmp-dead0001"  # another target's: not ours to remove
    other.write_bytes(b"x")
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # a writer in progress holds its lock
        assert remove_stale_temporaries(path) == 1
        assert not abandoned.exists() and live.exists() and other.exists()


def test_atomic_path_works_with_apis_that_take_a_name(tmp_path):
    path = tmp_path / "m.npy"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.arange(5))  # (np.save given a name would append ".npy" to the temporary's)
    np.testing.assert_array_equal(np.load(path), np.arange(5))


def test_truncated_mmap_raises_instead_of_sigbus(tmp_path):
    path = tmp_path / "m.index"
    version_index(2).save(path)
    index = FlatIndex.load(path, mmap=True)
    index.search(np.ones((1, DIM)), k=3)
    os.truncate(path, 4096)  # another process cuts the file
    with pytest.raises(RuntimeError, match="truncated"):
        index.search(np.ones((1, DIM)), k=3)


def test_truncated_npy_mmap_raises(tmp_path):
    path = tmp_path / "v.npy"
    np.save(path, np.ones((2000, 16), dtype=np.float32))
    index = FlatIndex.from_npy(path)
    os.truncate(path, 1000)
    with pytest.raises(RuntimeError, match="truncated"):
        index.search(np.ones(16), k=1)


def test_replaced_mmap_keeps_searching_the_mapped_file(tmp_path):
    path = tmp_path / "m.index"
    version_index(2).save(path)
    index = FlatIndex.load(path, mmap=True)
    version_index(3).save(path)  # a rename over it: the mapped file lives on
    scores, _ = index.search(np.ones((1, DIM)), k=1)
    assert scores[0, 0] == pytest.approx(2.0 * DIM)


def test_encode_corpus_npy_is_replaced_only_when_complete(tmp_path):
    from mambaret.encoding.corpus import encode_corpus

    from mambaret.encoding.tokenization import TruncationStats

    class FailingEncoder:
        truncation, max_length = TruncationStats(), None

        def get_sentence_embedding_dimension(self):
            return 4

        def encode_document(self, texts, **kwargs):
            raise RuntimeError("killed midway")

    path = tmp_path / "emb.npy"
    np.save(path, np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(RuntimeError):
        encode_corpus(FailingEncoder(), ["a", "b", "c"], 3, str(path))
    np.testing.assert_array_equal(np.load(path), np.zeros((3, 4)))
    assert temporaries(path) == []
