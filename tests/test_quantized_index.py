"""Compressed embeddings: quantize_embeddings against sentence-transformers, the binary and int8
search kernels against their references and FAISS, and rescoring."""
import warnings

import numpy as np
import pytest

import mambaret as mr
from mambaret import _C
from mambaret.search.quantization import binary_to_ubinary, calibrate_ranges

WIDTHS = [1, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65, 96, 100, 129]


def st_quantize(*args, **kwargs):
    quantization = pytest.importorskip("sentence_transformers.quantization")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantization.quantize_embeddings(*args, **kwargs)


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary", "float32"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantize_equals_sentence_transformers(precision, dtype):
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((300, 45)).astype(dtype)
    calib = (rng.standard_normal((200, 45)) * 0.7).astype(dtype)  # narrower: values fall outside
    for kwargs in ({}, {"calibration_embeddings": calib}, {"ranges": calibrate_ranges(calib)}):
        ours = mr.quantize_embeddings(emb, precision, **kwargs)
        theirs = st_quantize(emb, precision, **kwargs)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), kwargs
    one = mr.quantize_embeddings(emb[0], precision, ranges=calibrate_ranges(calib))
    assert np.array_equal(one, st_quantize(emb[0], precision, ranges=calibrate_ranges(calib)))


def test_quantize_zero_width_range_and_errors():
    emb = np.ones((4, 3), dtype=np.float32)
    assert np.array_equal(mr.quantize_embeddings(emb, "int8"), st_quantize(emb, "int8"))
    with pytest.raises(ValueError, match="single embedding"):
        mr.quantize_embeddings(emb[0], "int8")
    with pytest.raises(ValueError, match="precision"):
        mr.quantize_embeddings(emb, "int4")
    with pytest.raises(ValueError, match="floating point"):
        mr.quantize_embeddings(emb.astype(np.int8), "binary")
    with pytest.raises(ValueError, match="shape"):
        mr.quantize_embeddings(emb, "int8", ranges=np.zeros((2, 4)))


def test_calibrate_ranges_on_a_sample():
    x = np.random.default_rng(2).standard_normal((1000, 8)).astype(np.float32)
    full = calibrate_ranges(x, sample_size=None)
    assert np.array_equal(full, np.vstack((x.min(0), x.max(0))))
    sample = calibrate_ranges(x, sample_size=100, seed=3)
    assert (sample[0] >= full[0]).all() and (sample[1] <= full[1]).all()
    assert np.array_equal(sample, calibrate_ranges(x, sample_size=100, seed=3))


def random_codes(rng, n, width, dtype):
    return rng.integers(0, 256, size=(n, width), dtype=np.uint8).view(dtype)


# 1000, 2100: past 31 chunks of 32 bytes (the row kernel flushes its byte sums); 4095 / 4096: the
# widest the AVX2 tile kernel's 16-bit distances take, and the first that goes to the row kernel
@pytest.mark.parametrize("width", WIDTHS + [1000, 2100, 4095, 4096])
def test_hamming_kernels_equal_reference(width):
    rng = np.random.default_rng(width)
    rows = random_codes(rng, 700, width, np.uint8)
    # 13: a group of twelve (two passes of six) and one alone in the tile kernel
    queries = random_codes(rng, 13, width, np.uint8)
    # tiles of 32 rows with partial last tiles (8 and 15 tiles: the 15th paired with itself)
    segments = [rows[:0], rows[:250], rows[250:]]
    for k in (20, 800):                                # 800 > rows: heaps never fill, every row enters
        ref = _C.hamming_search(queries, segments, k, kernel="reference")
        for kernel in _C.code_kernels(False):
            for threads in (1, 3):
                got = _C.hamming_search(queries, segments, k, threads=threads, kernel=kernel)
                assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1]), (kernel, threads, k)
    ref = _C.hamming_search(queries, segments, 20, kernel="reference")
    # the scores are bits - 2 * hamming, counted here bit by bit
    bits = np.unpackbits(queries[:, None, :] ^ rows[None, :, :], axis=-1).sum(-1)
    expected = 8 * width - 2 * bits
    top = np.take_along_axis(expected, ref[1], axis=1)
    assert np.array_equal(top, ref[0])


@pytest.mark.skipif("avx512" not in _C.code_kernels(False), reason="CPU without AVX-512 VPOPCNTDQ")
def test_hamming_avx512_kernel_runs_when_present():
    rng = np.random.default_rng(5)
    for width in WIDTHS:
        rows, q = random_codes(rng, 300, width, np.uint8), random_codes(rng, 4, width, np.uint8)
        a = _C.hamming_search(q, [rows], 10, kernel="avx512")
        b = _C.hamming_search(q, [rows], 10, kernel="reference")
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_automatic_kernel_goes_by_speed():
    """Binary codes stay on the AVX2 tile kernel where it fits (it beat VPOPCNTDQ's row kernel 2.8x
    on an AVX-512 EPYC); wider codes, and int8 codes, take the AVX-512 kernel where there is one."""
    binary, int8 = _C.code_kernels(False), _C.code_kernels(True)
    if "avx2" in binary:
        assert _C.code_kernel_auto(False, 96) == "avx2"
        assert _C.code_kernel_auto(False, 4096) == ("avx512" if "avx512" in binary else "avx2")
    assert _C.code_kernel_auto(True, 768) == int8[-1]
    previous = _C.set_simd_limit("portable")
    try:
        assert _C.code_kernel_auto(False, 96) == _C.code_kernel_auto(True, 96) == "portable"
    finally:
        _C.set_simd_limit(previous)


def test_missing_kernel_is_an_error():
    q = np.zeros((1, 8), dtype=np.int8)
    missing = [k for k in ("avx2", "avx512") if k not in _C.code_kernels(True)]  # avx512: VNNI
    for kernel in missing:
        with pytest.raises(ValueError, match="does not run on this CPU"):
            _C.int8_search(q, [q], 1, kernel=kernel)
    with pytest.raises(ValueError, match="kernel must be"):
        _C.hamming_search(q.view(np.uint8), [q.view(np.uint8)], 1, kernel="sse")
    with pytest.raises(TypeError, match="dtype"):
        _C.hamming_search(q, [q], 1)
    with pytest.raises(ValueError, match="bytes per code"):
        _C.hamming_search(q.view(np.uint8), [np.zeros((2, 4), np.uint8)], 1)


@pytest.mark.parametrize("width", WIDTHS + [768])
def test_int8_kernels_equal_reference_and_numpy(width):
    rng = np.random.default_rng(100 + width)
    rows = random_codes(rng, 500, width, np.int8)
    rows[0] = -128  # the extremes: -128 * -128 sums must not overflow
    rows[1] = 127
    queries = random_codes(rng, 11, width, np.int8)  # 11: five pairs and one alone in the AVX2 kernels
    queries[0] = -128
    # queries at the other extremes too (-127 and 127 against the -128 and 127 rows), mixed with
    # queries that hold -128
    queries[1:6] = np.maximum(queries[1:6], -127)
    queries[1] = -127
    queries[7:] = np.maximum(queries[7:], -127)
    queries[8] = 127
    ref = _C.int8_search(queries, [rows[:123], rows[123:]], 15, kernel="reference")
    for kernel in _C.code_kernels(True):
        got = _C.int8_search(queries, [rows[:123], rows[123:]], 15, threads=2, kernel=kernel)
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1]), kernel
    exact = queries.astype(np.int64) @ rows.astype(np.int64).T
    order = np.lexsort((np.broadcast_to(np.arange(500), exact.shape), -exact), axis=1)[:, :15]
    assert np.array_equal(ref[1], order)
    assert np.array_equal(ref[0], np.take_along_axis(exact, order, 1).astype(np.float32))


def test_binary_index_matches_faiss():
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2000, 128)).astype(np.float32)
    q = rng.standard_normal((30, 128)).astype(np.float32)
    index = mr.BinaryFlatIndex(128)
    index.add(x[:1500])
    index.add(mr.quantize_embeddings(x[1500:], "binary"))  # int8 codes from sentence-transformers' layout
    scores, ids = index.search(q, 10, rescore_multiplier=None)
    ref = faiss.IndexBinaryFlat(128)
    ref.add(np.packbits(x > 0, axis=-1))
    distances, ref_ids = ref.search(np.packbits(q > 0, axis=-1), 10)
    assert np.array_equal(index.hamming(scores), distances)
    assert np.array_equal(scores, 128 - 2 * distances.astype(np.float32))
    for row in range(len(q)):  # ids agree wherever the distance does not tie across the cut
        last = distances[row, -1]
        assert set(ids[row][distances[row] < last]) == set(ref_ids[row][distances[row] < last])
    back = index.to_faiss()
    assert np.array_equal(back.search(np.packbits(q > 0, axis=-1), 10)[0], distances)


def test_binary_index_odd_dimension_scores():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((50, 13)).astype(np.float32)
    index = mr.BinaryFlatIndex(13)
    index.add(x)
    scores, ids = index.search(x[:3], 50, rescore_multiplier=None)
    signs = np.where(x > 0, 1, -1)
    exact = signs[:3] @ signs.T
    assert np.array_equal(scores, np.take_along_axis(exact, ids, 1).astype(np.float32))
    assert (scores[:, 0] == 13).all()


def test_int8_index_equals_numpy_and_ids_and_files(tmp_path):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((800, 48)).astype(np.float32)
    q = rng.standard_normal((12, 48)).astype(np.float32)
    index = mr.Int8FlatIndex(48)
    with pytest.raises(ValueError, match="no ranges"):
        index.add(x)
    index.train(x[:500])
    names = [f"doc{i}" for i in range(800)]
    index.add(x, ids=names)
    scores, ids = index.search(q, 5)
    codes = mr.quantize_embeddings(x, "int8", ranges=index.ranges).astype(np.int64)
    qcodes = mr.quantize_embeddings(q, "int8", ranges=index.ranges).astype(np.int64)
    exact = qcodes @ codes.T
    order = np.lexsort((np.broadcast_to(np.arange(800), exact.shape), -exact), axis=1)[:, :5]
    assert ids.tolist() == [[names[j] for j in row] for row in order]
    for mmap in (False, True):
        path = tmp_path / "i8.index"
        index.save(path)
        loaded = mr.Int8FlatIndex.load(path, mmap=mmap)
        assert np.array_equal(loaded.ranges, index.ranges)
        s2, i2 = loaded.search(q, 5)
        assert np.array_equal(s2, scores) and (i2 == ids).all()
    assert index.remove_ids(["doc3"]) == 1 and index.ntotal == 799
    raw = bytearray(path.read_bytes())
    raw[100] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupt"):
        mr.Int8FlatIndex.load(path)
    with pytest.raises(ValueError, match="is a file of Int8FlatIndex, not of BinaryFlatIndex"):
        mr.BinaryFlatIndex.load(path)


def test_binary_index_files_and_padding(tmp_path):
    x = np.random.default_rng(10).standard_normal((5, 24)).astype(np.float32)
    index = mr.BinaryFlatIndex(24)
    index.add(x, ids=[10, 11, 12, 13, 14])
    index.save(tmp_path / "b.index")
    loaded = mr.BinaryFlatIndex.load(tmp_path / "b.index", mmap=True)
    scores, ids = loaded.search(x[:2], 8)
    assert ids[0, 0] == 10 and ids[1, 0] == 11 and (ids[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()
    assert loaded.ntotal == 5 and loaded.labels().tolist() == [10, 11, 12, 13, 14]


@pytest.mark.parametrize("int8", [False, True])
def test_rescore_kernel_equals_reference(int8):
    rng = np.random.default_rng(11)
    vectors = (random_codes(rng, 300, 40, np.int8) if int8
               else rng.standard_normal((300, 40)).astype(np.float32))
    weights = rng.standard_normal((6, 40)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32) if int8 else None
    candidates = np.stack([rng.permutation(300)[:50] for _ in range(6)]).astype(np.int64)
    candidates[0, 10:] = -1  # fewer candidates than k: padding
    got = _C.rescore(weights, bias, candidates, vectors, 20, threads=2)
    ref = _C.rescore(weights, bias, candidates, vectors, 20, reference=True)
    assert np.array_equal(got[1], ref[1])
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-4)
    assert (got[1][0, 10:] == -1).all()
    with pytest.raises(IndexError, match="outside"):
        _C.rescore(weights, bias, candidates + 300, vectors, 5)


def test_rescoring_with_float_vectors_memory_mapped(tmp_path):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1000, 64)).astype(np.float32)
    q = rng.standard_normal((20, 64)).astype(np.float32)
    np.save(tmp_path / "emb.npy", x)
    exact = mr.FlatIndex(64)
    exact.add(x)
    exact_scores, exact_ids = exact.search(q, 10)
    for index in (mr.BinaryFlatIndex(64), mr.Int8FlatIndex(64, ranges=calibrate_ranges(x))):
        index.add(x)
        index.set_rescore_vectors(tmp_path / "emb.npy")
        assert isinstance(index.rescore_vectors, np.memmap)
        # depth k * multiplier covers every row: rescoring is exact search
        scores, ids = index.search(q, 10, rescore_multiplier=100)
        assert np.array_equal(ids, exact_ids)
        np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=1e-5)
        # shallow depth: the result is the float order of the code search's candidates
        _, candidates = index.search(q, 40, rescore_multiplier=None)
        scores, ids = index.search(q, 10, rescore_multiplier=4)
        for row in range(len(q)):
            cand = candidates[row]
            best = cand[np.argsort(-(x[cand] @ q[row]), kind="stable")[:10]]
            assert set(ids[row]) == set(best)
        with pytest.raises(ValueError, match="float queries"):
            index.search(index._encode(q, "q"), 10)
        with pytest.raises(ValueError, match="detach"):
            index.remove_ids([1])
        index.add(x[:3])
        with pytest.raises(ValueError, match="every stored row"):
            index.search(q, 10)


def test_binary_rescoring_with_int8_vectors():
    rng = np.random.default_rng(13)
    x = rng.standard_normal((600, 32)).astype(np.float32)
    q = rng.standard_normal((5, 32)).astype(np.float32)
    ranges = calibrate_ranges(x)
    index = mr.BinaryFlatIndex(32)
    index.add(x)
    with pytest.raises(ValueError, match="ranges"):
        index.set_rescore_vectors(mr.quantize_embeddings(x, "int8", ranges=ranges))
    index.set_rescore_vectors(mr.quantize_embeddings(x, "int8", ranges=ranges), ranges=ranges)
    scores, ids = index.search(q, 5, rescore_multiplier=200)
    # scores approximate the float inner products (bin centres), so the top ids mostly agree
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, ids, 1), atol=0.25)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :5]
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ids, exact)]) >= 0.8


def test_binary_to_ubinary():
    x = np.random.default_rng(14).standard_normal((10, 40))
    assert np.array_equal(binary_to_ubinary(mr.quantize_embeddings(x, "binary")), mr.quantize_embeddings(x, "ubinary"))


def test_code_indexes_from_npy(tmp_path):
    rng = np.random.default_rng(15)
    x = rng.standard_normal((300, 32)).astype(np.float32)
    ranges = calibrate_ranges(x)
    np.save(tmp_path / "ub.npy", mr.quantize_embeddings(x, "ubinary"))
    np.save(tmp_path / "i8.npy", mr.quantize_embeddings(x, "int8", ranges=ranges))
    for mmap in (True, False):
        binary = mr.BinaryFlatIndex.from_npy(tmp_path / "ub.npy", mmap=mmap)
        int8 = mr.Int8FlatIndex.from_npy(tmp_path / "i8.npy", mmap=mmap, ranges=ranges)
        assert binary.dim == 32 and binary.ntotal == 300 and int8.ntotal == 300
        assert binary.search(x[:4], 1)[1][:, 0].tolist() == [0, 1, 2, 3]
        fresh = mr.Int8FlatIndex(32, ranges=ranges)
        fresh.add(x)
        assert np.array_equal(int8.search(x[:4], 5)[1], fresh.search(x[:4], 5)[1])
    with pytest.raises(ValueError, match="expected C-ordered uint8"):
        mr.BinaryFlatIndex.from_npy(tmp_path / "i8.npy")
