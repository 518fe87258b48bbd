"""FlatIndex shared between threads: adds and removals never show a search a half-done index."""
import threading

import numpy as np
import pytest

from mambaret import FlatIndex
from mambaret._rwlock import ReadWriteLock

BATCH, BATCHES, DIM = 50, 40, 8


def vectors(start: int, n: int) -> np.ndarray:
    x = np.zeros((n, DIM), dtype=np.float32)
    x[:, 0] = np.arange(start, start + n) + 1.0  # vector i scores i+1 against e0
    return x


@pytest.mark.parametrize("string_ids", [False, True])
def test_searches_racing_adds_see_a_prefix_of_the_adds(string_ids):
    index = FlatIndex(DIM, threads=1)
    total = BATCH * BATCHES
    query = np.eye(1, DIM, dtype=np.float32)
    errors, prefixes = [], []
    done, searched = threading.Event(), threading.Event()

    def adder():
        try:
            for b in range(BATCHES):
                ids = [f"d{i}" for i in range(b * BATCH, (b + 1) * BATCH)] if string_ids else None
                index.add(vectors(b * BATCH, BATCH), ids)
                searched.wait(5)  # let the searchers in between adds
                searched.clear()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            done.set()

    def searcher():
        try:
            while not done.is_set():
                scores, ids = index.search(query, k=total)
                found = [i for i in ids[0] if i is not None and i != -1]
                m = len(found)
                expected = [f"d{i}" if string_ids else i for i in range(m - 1, -1, -1)]
                assert m % BATCH == 0 and list(found) == expected, (m, found[:5])
                np.testing.assert_array_equal(scores[0, :m], np.arange(m, 0, -1, dtype=np.float32))
                prefixes.append(m)
                searched.set()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=adder)] + [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert index.ntotal == total and len(set(prefixes)) > BATCHES // 2


def test_removals_racing_searches():
    index = FlatIndex(DIM, threads=1)
    index.add(vectors(0, 1000))
    errors = []

    def remover():
        try:
            for start in range(0, 1000, 100):
                assert index.remove_ids(range(start, start + 100)) == 100
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def searcher():
        try:
            for _ in range(200):
                _, ids = index.search(np.eye(1, DIM), k=5)
                kept = ids[0][ids[0] >= 0]
                # removals go from the lowest ids up, so what is left is a top range
                assert list(kept) == list(range(999, 999 - len(kept), -1))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=remover)] + [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_readers_share_and_a_writer_excludes_them():
    lock = ReadWriteLock()
    inside = threading.Barrier(2, timeout=5)

    def reader():
        with lock.reading():
            inside.wait()  # both readers are in at once, or this times out

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    assert not inside.broken

    order = []
    reading = threading.Event()
    release = threading.Event()

    def long_reader():
        with lock.reading():
            reading.set()
            release.wait(5)
            order.append("read done")

    def writer():
        with lock.writing():
            order.append("write")

    r = threading.Thread(target=long_reader)
    r.start()
    reading.wait(5)
    w = threading.Thread(target=writer)
    w.start()
    w.join(0.2)
    assert order == []  # the writer waits for the reader
    release.set()
    r.join()
    w.join()
    assert order == ["read done", "write"]


def test_index_pickles_without_its_lock(tmp_path):
    import pickle

    index = FlatIndex(DIM)
    index.add(vectors(0, 10), ids=[f"d{i}" for i in range(10)])
    index.save(tmp_path / "x.index")
    for original in (index, FlatIndex.load(tmp_path / "x.index", mmap=True)):
        copy = pickle.loads(pickle.dumps(original))
        copy.add(vectors(10, 1), ids=["new"])
        assert copy.search(np.eye(1, DIM), k=2)[1].tolist() == [["new", "d9"]]
        assert original.ntotal == 10
