"""The C search (_C.flat_search) against its full-sort reference, and its argument checks."""
import numpy as np
import pytest

from mambaret import _C


def integer_data(rng, n, dim):
    # small integers: every dot product is exact in float32, so ties are real ties and the
    # blocked GEMM and the reference must agree bit for bit, order included
    return rng.integers(-2, 3, size=(n, dim)).astype(np.float32)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_matches_reference_with_ties_across_segments(threads):
    rng = np.random.default_rng(threads)
    for _ in range(40):
        dim = int(rng.integers(1, 24))
        segments = [integer_data(rng, int(rng.integers(0, 900)), dim) for _ in range(int(rng.integers(0, 4)))]
        queries = integer_data(rng, int(rng.integers(1, 30)), dim)
        k = int(rng.integers(1, 40))
        scores, ids = _C.flat_search(queries, segments, k, threads=threads)
        ref_scores, ref_ids = _C.flat_search(queries, segments, k, reference=True)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(scores, ref_scores)


def test_matches_reference_on_random_floats():
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((5000, 96)).astype(np.float32)
    queries = rng.standard_normal((300, 96)).astype(np.float32)
    scores, ids = _C.flat_search(queries, [vectors], 25, threads=2)
    ref_scores, ref_ids = _C.flat_search(queries, [vectors], 25, reference=True)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-4)
    # rounding may swap near-equal neighbours only: every returned id scores like the reference's
    exact = queries.astype(np.float64) @ vectors.astype(np.float64).T
    np.testing.assert_allclose(np.take_along_axis(exact, ids, 1), np.take_along_axis(exact, ref_ids, 1),
                               rtol=1e-5, atol=1e-4)
    assert (np.mean(ids == ref_ids)) > 0.99


def test_ties_go_to_the_lower_id():
    vectors = np.ones((1000, 4), dtype=np.float32)
    scores, ids = _C.flat_search(np.ones((2, 4), dtype=np.float32), [vectors[:600], vectors[600:]], 5, threads=2)
    np.testing.assert_array_equal(ids, [[0, 1, 2, 3, 4]] * 2)
    np.testing.assert_array_equal(scores, np.full((2, 5), 4.0, dtype=np.float32))


def test_sorted_descending_and_padded_when_k_exceeds_rows():
    vectors = np.array([[1, 0], [3, 0], [2, 0]], dtype=np.float32)
    scores, ids = _C.flat_search(np.array([[1, 0]], dtype=np.float32), [vectors], 5)
    np.testing.assert_array_equal(ids, [[1, 2, 0, -1, -1]])
    np.testing.assert_array_equal(scores, [[3, 2, 1, -np.inf, -np.inf]])
    assert scores.dtype == np.float32 and ids.dtype == np.int64


def test_empty_database_and_no_queries():
    q = np.ones((3, 8), dtype=np.float32)
    scores, ids = _C.flat_search(q, [], 4)
    assert scores.shape == (3, 4) and np.all(np.isneginf(scores)) and np.all(ids == -1)
    scores, ids = _C.flat_search(q, [np.empty((0, 8), dtype=np.float32)], 4)
    assert np.all(ids == -1)
    scores, ids = _C.flat_search(np.empty((0, 8), dtype=np.float32), [np.ones((5, 8), dtype=np.float32)], 4)
    assert scores.shape == (0, 4) and ids.shape == (0, 4)


def test_nan_rows_are_never_returned():
    vectors = np.ones((6, 3), dtype=np.float32)
    vectors[2] = np.nan
    for reference in (False, True):
        _, ids = _C.flat_search(np.ones((1, 3), dtype=np.float32), [vectors], 6, reference=reference)
        np.testing.assert_array_equal(ids, [[0, 1, 3, 4, 5, -1]])


@pytest.mark.parametrize("k", [0, -3])
def test_k_must_be_positive(k):
    with pytest.raises(ValueError, match="k must be positive"):
        _C.flat_search(np.ones((1, 4), dtype=np.float32), [np.ones((2, 4), dtype=np.float32)], k)


def test_bad_arrays_are_rejected():
    q = np.ones((2, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="dimension 3"):
        _C.flat_search(q, [np.ones((5, 3), dtype=np.float32)], 2)
    with pytest.raises(TypeError, match="float32"):
        _C.flat_search(q, [np.ones((5, 4))], 2)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.flat_search(q, [np.ones((5, 8), dtype=np.float32)[:, ::2]], 2)
    with pytest.raises(TypeError, match="list"):
        _C.flat_search(q, 5, 2)
    with pytest.raises(ValueError, match="threads"):
        _C.flat_search(q, [np.ones((5, 4), dtype=np.float32)], 2, threads=0)
