"""The int8 linear's kernels (W8A8) against their reference twin, bit for bit, on every path this
CPU runs; per-token quantization; the Hadamard rotation against its explicit-matrix twin."""
from __future__ import annotations

import numpy as np
import pytest

from mambaret import _C

KERNELS = ["portable", "avx2", "avxvnni", "avx512vnni"]
AVAILABLE = [k for k in KERNELS if _C.int8_kernels()[k]]


def problem(seed, T, N, K):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((T, K)) * rng.uniform(0.1, 3, (T, 1))).astype(np.float32)
    w = rng.integers(-127, 128, (N, K)).astype(np.int8)
    scales = rng.uniform(0, 0.02, N).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    out = rng.standard_normal((T, N)).astype(np.float32)
    return a, w, scales, bias, out


# shapes that leave a remainder in every tile dimension: rows (6 / 4), groups of 16 outputs, K % 4
SHAPES = [(1, 1, 1), (3, 17, 5), (7, 33, 45), (13, 100, 130), (25, 64, 768), (6, 48, 64)]


@pytest.mark.parametrize("kernel", AVAILABLE)
@pytest.mark.parametrize("T,N,K", SHAPES)
def test_kernel_equals_reference(kernel, T, N, K):
    a, w, scales, bias, out = problem(T * 1000 + N + K, T, N, K)
    for b, o in [(None, None), (bias, None), (bias, out), (None, out)]:
        ref = _C.op_linear_int8(a, w, scales, b, o, kernel="reference")
        got = _C.op_linear_int8(a, w, scales, b, o, kernel=kernel)
        np.testing.assert_array_equal(got, ref)


def test_reference_is_the_integer_product():
    a, w, scales, bias, out = problem(3, 9, 40, 70)
    q, sa = _C.op_quantize_rows_int8(a)
    exact = (q.astype(np.int64) @ w.astype(np.int64).T).astype(np.float64) * sa[:, None] * scales[None, :]
    ref = _C.op_linear_int8(a, w, scales, bias, out, kernel="reference")
    np.testing.assert_allclose(ref, exact + bias + out, rtol=1e-5, atol=1e-5)
    # and it approximates the float product to int8 precision
    fp = a.astype(np.float64) @ (w.astype(np.float64) * scales[:, None]).T
    assert np.abs(_C.op_linear_int8(a, w, scales, kernel="reference") - fp).max() < 0.02 * np.abs(fp).max()


def test_quantize_rows():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 33)).astype(np.float32)
    a[2] = 0.0
    a[3, 7] = 50.0  # an outlier sets its row's scale
    q, s = _C.op_quantize_rows_int8(a)
    m = np.abs(a).max(1)
    np.testing.assert_array_equal(s, (m / np.float32(127)).astype(np.float32))
    inv = np.where(m > 0, np.float32(127) / np.where(m > 0, m, 1), 0).astype(np.float32)
    np.testing.assert_array_equal(q, np.clip(np.rint(a * inv[:, None]), -127, 127).astype(np.int8))
    assert q[3, 7] == 127 and not q[2].any() and s[2] == 0


def test_kernels_reject_bad_weights():
    a, w, scales, _, _ = problem(1, 2, 16, 8)
    w[3, 2] = -128
    with pytest.raises(ValueError, match="-128"):
        _C.op_linear_int8(a, w, scales, kernel="portable")
    w[3, 2] = 0
    scales[5] = np.nan
    with pytest.raises(ValueError, match="scale 5"):
        _C.op_linear_int8(a, w, scales, kernel="portable")
    with pytest.raises(ValueError, match="kernel"):
        _C.op_linear_int8(a, w, np.ones(16, np.float32), kernel="avx9")


def test_dispatch_follows_simd_limit():
    kernels = _C.int8_kernels()
    previous = _C.set_simd_limit("portable")
    try:
        assert _C.int8_kernels()["best"] == "portable"
        if kernels["avx2"]:
            _C.set_simd_limit("avx2")
            assert _C.int8_kernels()["best"] in ("avx2", "avxvnni")  # avxvnni only with the VEX form
        _C.set_simd_limit("auto")
        assert _C.int8_kernels()["best"] == kernels["best"]
        assert _C.build_info()["int8"] == kernels["path"]
    finally:
        _C.set_simd_limit(previous)


@pytest.mark.parametrize("n,block", [(8, 8), (24, 8), (768, 256), (1536, 512), (6, 2), (5, 1), (16, 4)])
def test_hadamard_against_matrix(n, block):
    rng = np.random.default_rng(n + block)
    x = rng.standard_normal((4, n)).astype(np.float32)
    signs = rng.choice(np.array([-1, 1], np.int8), n)
    for s in (None, signs):
        fast = _C.op_hadamard(x, block, s)
        ref = _C.op_hadamard(x, block, s, reference=True)
        np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(fast, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)
    # R is orthogonal and symmetric up to the signs: applying H twice gives x back
    np.testing.assert_allclose(_C.op_hadamard(_C.op_hadamard(x, block), block), x, rtol=1e-5, atol=1e-5)


def test_hadamard_rejects_bad_block():
    x = np.ones((1, 12), np.float32)
    for block in (0, 3, 8, 24):
        with pytest.raises(ValueError, match="power of two"):
            _C.op_hadamard(x, block)
