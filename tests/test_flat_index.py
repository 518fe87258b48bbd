"""FlatIndex: ids, chunked adds, removal, files, memory-mapped search, faiss export, bad input."""
import os
import struct

import numpy as np
import pytest

import mambaret as mr
from mambaret import FlatIndex


def brute_force(queries, vectors, k):
    """Top-k by float64 inner product, ties to the lower position."""
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    order = np.lexsort((np.broadcast_to(np.arange(vectors.shape[0]), scores.shape), -scores), axis=1)
    return order[:, :k]


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((3000, 48)).astype(np.float32), rng.standard_normal((40, 48)).astype(np.float32)


def test_search_in_chunks_equals_brute_force(data):
    vectors, queries = data
    index = FlatIndex(48)
    for start in range(0, 3000, 700):
        index.add(vectors[start:start + 700])
    assert index.ntotal == len(index) == 3000
    scores, ids = index.search(queries, k=10)
    assert scores.shape == ids.shape == (40, 10) and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, brute_force(queries, vectors, 10))
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_float64_and_one_dimensional_inputs(data):
    vectors, queries = data
    index = FlatIndex(48)
    index.add(vectors.astype(np.float64))
    scores, ids = index.search(queries[0].astype(np.float64), k=3)
    assert ids.shape == (1, 3)
    np.testing.assert_array_equal(ids[0], brute_force(queries[:1], vectors, 3)[0])


def test_k_larger_than_index_pads(data):
    vectors, queries = data
    index = FlatIndex(48)
    index.add(vectors[:4])
    scores, ids = index.search(queries[:2], k=6)
    assert np.all(ids[:, 4:] == -1) and np.all(np.isneginf(scores[:, 4:]))
    assert sorted(ids[0, :4].tolist()) == [0, 1, 2, 3]


def test_empty_index_returns_only_padding():
    index = FlatIndex(8)
    scores, ids = index.search(np.ones((2, 8)), k=3)
    assert np.all(ids == -1) and np.all(np.isneginf(scores))


@pytest.mark.parametrize("k", [0, -1, 2.5, True, "3"])
def test_bad_k(k):
    index = FlatIndex(4)
    index.add(np.ones((3, 4)))
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.ones((1, 4)), k=k)


def test_wrong_dimension_and_non_finite_vectors():
    index = FlatIndex(4)
    with pytest.raises(ValueError, match="dimension 5"):
        index.add(np.ones((2, 5)))
    with pytest.raises(ValueError, match="2-D"):
        index.add(np.ones((2, 2, 4)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.add(np.array([[1, 2, np.nan, 4]]))
    with pytest.raises(ValueError, match="numeric"):
        index.add(np.array([["a", "b", "c", "d"]]))
    index.add(np.ones((2, 4)))
    with pytest.raises(ValueError, match="dimension 3"):
        index.search(np.ones((1, 3)), k=1)
    assert index.ntotal == 2
    with pytest.raises(ValueError, match="dim"):
        FlatIndex(0)


def test_integer_ids_and_duplicates(data):
    vectors, queries = data
    index = FlatIndex(48)
    index.add(vectors[:10], ids=np.arange(100, 110))
    with pytest.raises(ValueError, match="duplicate id 105"):
        index.add(vectors[10:12], ids=[105, 200])
    with pytest.raises(ValueError, match="duplicate integer ids"):
        index.add(vectors[10:12], ids=[300, 300])
    with pytest.raises(ValueError, match=">= 0"):
        index.add(vectors[10:11], ids=[-4])
    with pytest.raises(ValueError, match="got 1 ids for 2"):
        index.add(vectors[10:12], ids=[7])
    assert index.ntotal == 10
    index.add(vectors[10:12])  # continue after the largest id
    assert index.labels().tolist() == list(range(100, 112))
    _, ids = index.search(vectors[3:4], k=1)
    assert ids[0, 0] == 103


def test_string_ids(data):
    vectors, queries = data
    index = FlatIndex(48)
    names = [f"doc-{i}" for i in range(20)]
    index.add(vectors[:20], ids=names)
    scores, ids = index.search(queries[:3], k=25)
    assert ids.dtype == object and ids.shape == (3, 25)
    expected = brute_force(queries[:3], vectors[:20], 20)
    assert ids[:, :20].tolist() == [[names[i] for i in row] for row in expected]
    assert all(v is None for v in ids[:, 20:].ravel())
    with pytest.raises(ValueError, match="duplicate string id 'doc-3'"):
        index.add(vectors[20:22], ids=["doc-3", "new"])
    with pytest.raises(ValueError, match="duplicate string ids"):
        index.add(vectors[20:22], ids=["x", "x"])
    with pytest.raises(ValueError, match="needs ids"):
        index.add(vectors[20:22])
    with pytest.raises(ValueError, match="integer ids cannot"):
        index.add(vectors[20:22], ids=[1, 2])
    assert index.ntotal == 20
    other = FlatIndex(48)
    other.add(vectors[:2])
    with pytest.raises(ValueError, match="string ids cannot"):
        other.add(vectors[2:4], ids=["a", "b"])


def test_remove_ids_keeps_the_other_ids(data):
    vectors, queries = data
    index = FlatIndex(48)
    index.add(vectors[:100])
    assert index.remove_ids([3, 50, 99, 12345]) == 3
    assert index.ntotal == 97
    kept = np.setdiff1d(np.arange(100), [3, 50, 99])
    _, ids = index.search(queries, k=5)
    np.testing.assert_array_equal(ids, kept[brute_force(queries, vectors[kept], 5)])
    index.add(vectors[100:101])
    assert index.labels()[-1] == 100  # ids continue after the largest ever given, even if removed
    assert index.remove_ids([]) == 0
    with pytest.raises(ValueError, match="integer ids"):
        index.remove_ids(["a"])


def test_remove_string_ids(data):
    vectors, _ = data
    index = FlatIndex(48)
    index.add(vectors[:5], ids=list("abcde"))
    assert index.remove_ids(["b", "zz"]) == 1
    _, ids = index.search(vectors[1:2], k=4)
    assert "b" not in ids[0].tolist() and ids.shape == (1, 4)
    index.add(vectors[1:2], ids=["b"])  # the name is free again
    _, ids = index.search(vectors[1:2], k=1)
    assert ids[0, 0] == "b"


def test_reset(data):
    vectors, _ = data
    index = FlatIndex(48)
    index.add(vectors[:5], ids=list("abcde"))
    index.reset()
    assert index.ntotal == 0 and not index.string_ids
    index.add(vectors[:3])
    assert index.labels().tolist() == [0, 1, 2]


@pytest.mark.parametrize("string_ids", [False, True])
@pytest.mark.parametrize("mmap", [False, True])
def test_save_and_load_round_trip(tmp_path, data, string_ids, mmap):
    vectors, queries = data
    index = FlatIndex(48)
    ids = [f"d{i}" for i in range(500)] if string_ids else np.arange(1000, 1500)
    index.add(vectors[:500], ids=ids)
    index.remove_ids(["d7"] if string_ids else [1007])
    path = tmp_path / "index.mrix"
    index.save(path)
    loaded = FlatIndex.load(path, mmap=mmap)
    assert loaded.ntotal == 499 and loaded.dim == 48 and loaded.string_ids == string_ids
    for a, b in zip(index.search(queries, k=7), loaded.search(queries, k=7)):
        np.testing.assert_array_equal(a, b)
    loaded.add(vectors[600:601], ids=["new"] if string_ids else None)
    assert loaded.ntotal == 500


def test_empty_index_round_trip(tmp_path):
    path = tmp_path / "empty.mrix"
    FlatIndex(16).save(path)
    loaded = FlatIndex.load(path)
    assert loaded.ntotal == 0 and loaded.dim == 16


@pytest.fixture
def saved(tmp_path, data):
    vectors, _ = data
    index = FlatIndex(48)
    index.add(vectors[:50], ids=[f"d{i}" for i in range(50)])
    path = tmp_path / "index.mrix"
    index.save(path)
    return path


@pytest.mark.parametrize("cut", [0, 10, 63, 64, 1000, -1])
def test_truncated_file_is_rejected(saved, cut):
    raw = saved.read_bytes()
    saved.write_bytes(raw[:cut] if cut >= 0 else raw[:-1])
    with pytest.raises(ValueError, match="truncated"):
        FlatIndex.load(saved)


@pytest.mark.parametrize("offset", [100, 64 + 50 * 48 * 4 + 3, -10])
def test_flipped_byte_fails_the_checksum(saved, offset):
    raw = bytearray(saved.read_bytes())
    raw[offset] ^= 0x40
    saved.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        FlatIndex.load(saved)


def test_bad_header_fields(saved):
    raw = bytearray(saved.read_bytes())
    bad_magic = b"NOTANIDX" + raw[8:]
    saved.write_bytes(bytes(bad_magic))
    with pytest.raises(ValueError, match="magic"):
        FlatIndex.load(saved)
    bad_version = raw[:8] + struct.pack("<I", 99) + raw[12:]
    saved.write_bytes(bytes(bad_version))
    with pytest.raises(ValueError, match="version 99"):
        FlatIndex.load(saved)
    bad_dim = raw[:16] + struct.pack("<Q", 47) + raw[24:]
    saved.write_bytes(bytes(bad_dim))
    with pytest.raises(ValueError, match="truncated|trailing"):
        FlatIndex.load(saved)
    huge = raw[:24] + struct.pack("<Q", 1 << 60) + raw[32:]
    saved.write_bytes(bytes(huge))
    with pytest.raises(ValueError):
        FlatIndex.load(saved)


def test_trailing_bytes_are_rejected(saved):
    with open(saved, "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="trailing"):
        FlatIndex.load(saved)


def test_from_npy_memory_mapped(tmp_path, data):
    vectors, queries = data
    path = tmp_path / "vectors.npy"
    np.save(path, vectors)
    index = FlatIndex.from_npy(path, mmap=True)
    assert isinstance(index._segments()[0], np.memmap)
    np.testing.assert_array_equal(index.search(queries, k=8)[1], brute_force(queries, vectors, 8))
    index.add(queries[:1])  # goes after the mapped rows
    _, ids = index.search(queries[:1], k=1)
    assert ids[0, 0] == 3000
    with pytest.raises(ValueError, match="memory-mapped"):
        index.remove_ids([5])
    assert index.remove_ids([3000]) == 1
    in_memory = FlatIndex.from_npy(path, mmap=False, ids=[str(i) for i in range(3000)])
    assert in_memory.search(queries[:1], k=1)[1][0, 0] == str(brute_force(queries[:1], vectors, 1)[0, 0])


def test_from_npy_rejects_wrong_files(tmp_path):
    bad_dtype = tmp_path / "f64.npy"
    np.save(bad_dtype, np.ones((3, 4)))
    with pytest.raises(ValueError, match="float32"):
        FlatIndex.from_npy(bad_dtype)
    fortran = tmp_path / "fortran.npy"
    np.save(fortran, np.asfortranarray(np.ones((3, 4), dtype=np.float32)))
    with pytest.raises(ValueError, match="Fortran"):
        FlatIndex.from_npy(fortran)
    truncated = tmp_path / "truncated.npy"
    np.save(truncated, np.ones((100, 4), dtype=np.float32))
    truncated.write_bytes(truncated.read_bytes()[:-40])
    with pytest.raises(ValueError, match="truncated.npy"):
        FlatIndex.from_npy(truncated)


def test_to_faiss_gives_the_same_results(data):
    faiss = pytest.importorskip("faiss")
    vectors, queries = data
    index = FlatIndex(48)
    index.add(vectors)
    exported = index.to_faiss()
    assert isinstance(exported, faiss.IndexFlatIP) and exported.ntotal == 3000
    np.testing.assert_array_equal(exported.search(queries, 5)[1], index.search(queries, k=5)[1])
    index.remove_ids([0, 1])
    exported = index.to_faiss()
    np.testing.assert_array_equal(exported.search(queries, 5)[1], index.search(queries, k=5)[1])


def test_matches_faiss_on_normalised_embeddings(data):
    faiss = pytest.importorskip("faiss")
    vectors, queries = data
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    reference = faiss.IndexFlatIP(48)
    reference.add(vectors)
    index = FlatIndex(48)
    index.add(vectors)
    ref_scores, ref_ids = reference.search(queries, 10)
    scores, ids = index.search(queries, k=10)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    assert np.mean(ids == ref_ids) > 0.99


def test_exported_name():
    assert mr.FlatIndex is FlatIndex
