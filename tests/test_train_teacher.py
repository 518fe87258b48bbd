"""PrecomputedEmbeddings: the teacher whose vectors were computed before training."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
from mambaret.train import PrecomputedEmbeddings  # noqa: E402


def _teacher():
    vectors = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0], [3.0, 4.0005]], dtype=np.float32)
    return PrecomputedEmbeddings(["a", "b", "c", "a"], vectors), vectors


def test_encode_returns_the_stored_rows_in_the_asked_order():
    teacher, vectors = _teacher()
    assert teacher.dim == 2 and len(teacher) == 3 and "c" in teacher and "z" not in teacher
    np.testing.assert_array_equal(teacher.encode(["c", "a", "b", "c"]), vectors[[2, 0, 1, 2]])
    unit = teacher.encode(["a", "c"], normalize_embeddings=True, batch_size=8)  # extra encode kwargs are ignored
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 1.0]], rtol=1e-6)
    assert teacher.encode([]).shape == (0, 2)


def test_unknown_text_is_a_key_error_naming_it():
    teacher, _ = _teacher()
    with pytest.raises(KeyError, match="no embedding for 'never seen'"):
        teacher.encode(["a", "never seen"])


def test_a_text_twice_must_have_one_vector():
    with pytest.raises(ValueError, match="appears twice with different vectors"):
        PrecomputedEmbeddings(["a", "a"], np.array([[1.0, 0.0], [0.0, 1.0]]))


@pytest.mark.parametrize("texts, vectors, match", [
    (["a", "b"], np.zeros((3, 2)), r"\[len\(texts\), d\]"),
    (["a"], np.zeros(2), r"\[len\(texts\), d\]"),
    (["a"], np.array([[np.nan, 0.0]]), "NaN or inf"),
])
def test_malformed_vectors_are_value_errors(texts, vectors, match):
    with pytest.raises(ValueError, match=match):
        PrecomputedEmbeddings(texts, vectors)
