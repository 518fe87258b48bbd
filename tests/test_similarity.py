"""similarity() and semantic_search() against plain NumPy, and their argument checks."""
import numpy as np
import pytest

import mambaret as mr


def test_similarity_is_cosine():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((5, 16)), rng.standard_normal((7, 16))
    expected = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
    got = mr.similarity(a, b)
    assert got.shape == (5, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert mr.similarity(a[0], b).shape == (1, 7)


def test_similarity_of_a_zero_vector_is_zero():
    got = mr.similarity(np.zeros((1, 3)), np.ones((2, 3)))
    np.testing.assert_array_equal(got, np.zeros((1, 2), dtype=np.float32))


def test_similarity_bad_input():
    with pytest.raises(ValueError, match="dimensions differ"):
        mr.similarity(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        mr.similarity(np.array([[np.nan, 1.0]]), np.ones((1, 2)))


def test_similarity_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    a = torch.randn(3, 8)
    np.testing.assert_allclose(mr.similarity(a, a).diagonal(), np.ones(3), rtol=1e-5)


@pytest.mark.parametrize("score_function", ["cosine", "dot"])
def test_semantic_search_matches_brute_force(score_function):
    rng = np.random.default_rng(2)
    corpus, queries = rng.standard_normal((1200, 32)), rng.standard_normal((9, 32))
    results = mr.semantic_search(queries, corpus, top_k=4, score_function=score_function,
                                 query_chunk_size=4, corpus_chunk_size=500)
    scores = mr.similarity(queries, corpus) if score_function == "cosine" else queries @ corpus.T
    assert len(results) == 9
    for row, hits in zip(scores, results):
        assert [h["corpus_id"] for h in hits] == np.argsort(-row, kind="stable")[:4].tolist()
        np.testing.assert_allclose([h["score"] for h in hits], np.sort(row)[::-1][:4], rtol=1e-4, atol=1e-5)
        assert all(isinstance(h["corpus_id"], int) and isinstance(h["score"], float) for h in hits)


def test_semantic_search_small_corpus_and_bad_arguments():
    hits = mr.semantic_search(np.ones((1, 3)), np.eye(3)[:2], top_k=5)
    assert [h["corpus_id"] for h in hits[0]] == [0, 1]
    assert mr.semantic_search(np.ones((2, 3)), np.empty((0, 3)), top_k=3) == [[], []]
    for bad in ({"top_k": 0}, {"query_chunk_size": -1}, {"corpus_chunk_size": 0}, {"score_function": "l2"}):
        with pytest.raises(ValueError):
            mr.semantic_search(np.ones((1, 3)), np.ones((2, 3)), **bad)
