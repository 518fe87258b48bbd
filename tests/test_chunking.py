"""Micro-batching never changes a result: chunked == unchunked, batch composition is irrelevant."""
from __future__ import annotations

import numpy as np
import pytest

import mambaret as mr


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.fixture(scope="module")
def sequences():
    rng = np.random.default_rng(4)
    return [rng.integers(0, 300, n).tolist() for n in (1, 2, 3, 5, 17, 64, 250, 333)]


@pytest.mark.parametrize("max_tokens", [1, 2, 3, 7, 64, 100, 333])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_chunked_equals_unchunked(tiny_model_dir, sequences, max_tokens, pooling):
    whole = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=2, max_tokens=100_000, pooling=pooling)
    chunked = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=2, max_tokens=max_tokens, pooling=pooling)
    a = whole.encode(sequences, batch_size=len(sequences))
    b = chunked.encode(sequences, batch_size=len(sequences))
    for i in range(len(sequences)):
        assert rel(b[i], a[i]) <= 1e-6, f"sequence {i}"
    ta = whole.encode(sequences, output_value="token_embeddings", batch_size=len(sequences))
    tb = chunked.encode(sequences, output_value="token_embeddings", batch_size=len(sequences))
    for x, y in zip(tb, ta):
        assert rel(x, y) <= 1e-6


def test_embedding_independent_of_batch(tiny_model_dir, sequences):
    enc = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=2, max_tokens=50)
    alone = np.stack([enc.encode(s) for s in sequences])
    for batch_size in (1, 2, 3, len(sequences)):
        together = enc.encode(sequences, batch_size=batch_size)
        for i in range(len(sequences)):
            assert rel(together[i], alone[i]) <= 1e-6
    shuffled = enc.encode(sequences[::-1], batch_size=4)[::-1]
    for i in range(len(sequences)):
        assert rel(shuffled[i], alone[i]) <= 1e-6


def test_thread_counts_agree(tiny_model_dir, sequences):
    one = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=1).encode(sequences)
    two = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=2).encode(sequences)
    for i in range(len(sequences)):
        assert rel(two[i], one[i]) <= 1e-6


def test_mean_pooling_is_mean_of_token_states(tiny_model_dir, sequences):
    enc = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=1, pooling="mean", max_tokens=10)
    means = enc.encode(sequences)
    tokens = enc.encode(sequences, output_value="token_embeddings")
    for m, t in zip(means, tokens):
        np.testing.assert_allclose(m, t.mean(0), rtol=1e-5, atol=1e-6)


def test_output_shapes(tiny_model_dir):
    enc = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=1)
    assert enc.encode([]).shape == (0, 24)
    assert enc.encode([[1, 2]]).shape == (1, 24)
    assert enc.encode([1, 2, 3]).shape == (24,)
    both = enc.encode([[1, 2]], output_value=None)
    assert set(both[0]) == {"sentence_embedding", "token_embeddings"} and both[0]["token_embeddings"].shape == (2, 24)
    normed = enc.encode([[1, 2], [3]], normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, rtol=1e-6)


def test_token_embeddings_follow_convert_to(tiny_model_dir, sequences):
    torch = pytest.importorskip("torch")
    enc = mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=1)
    plain = enc.encode(sequences[:3], output_value="token_embeddings")
    for kwargs in ({"convert_to": "torch"}, {"convert_to_tensor": True}):
        got = enc.encode(sequences[:3], output_value="token_embeddings", **kwargs)
        assert all(isinstance(t, torch.Tensor) for t in got)
        for t, p in zip(got, plain):
            np.testing.assert_array_equal(t.numpy(), p)
    packed = enc.encode(sequences[:3], output_value="token_embeddings", convert_to="dlpack")
    for t, p in zip(packed, plain):
        assert not isinstance(t, np.ndarray) and hasattr(t, "__dlpack__")
        np.testing.assert_array_equal(np.from_dlpack(t), p)
    single = enc.encode(sequences[1], output_value="token_embeddings", convert_to="torch")
    assert isinstance(single, torch.Tensor) and tuple(single.shape) == plain[1].shape
    both = enc.encode(sequences[:2], output_value=None, convert_to="torch")
    assert all(isinstance(v, torch.Tensor) for d in both for v in d.values())
