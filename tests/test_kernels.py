"""Every CPU kernel against its plain reference on random data (normalised error)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from mambaret import _C


VARIANTS = ["auto", "portable"]  # auto: the SIMD path on a CPU that has one


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(np.asarray(b, np.float64)), 1e-30))


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("T,d", [(1, 1), (5, 37), (64, 768), (3, 8)])
@pytest.mark.parametrize("threads", [1, 2])
def test_rmsnorm(T, d, threads):
    rng = np.random.default_rng(T * d)
    x, w = rand(rng, T, d), rand(rng, d)
    fast = _C.op_rmsnorm(x, w, 1e-5, threads=threads)
    ref = _C.op_rmsnorm(x, w, 1e-5, variant="reference")
    expect = w * x / np.sqrt((x.astype(np.float64) ** 2).mean(1, keepdims=True) + 1e-5)
    assert rel_err(fast, ref) < 1e-6 and rel_err(ref, expect) < 1e-6


@pytest.mark.parametrize("n,d", [(1, 1), (7, 37), (64, 768), (2, 8)])
@pytest.mark.parametrize("threads", [1, 2])
def test_l2_normalize(n, d, threads):
    rng = np.random.default_rng(n + d)
    x = rand(rng, n, d)
    x[0] = 0.0  # a zero row stays zero (norm clamped at 1e-12, as torch's normalize)
    fast = _C.op_l2_normalize(x, threads=threads)
    ref = _C.op_l2_normalize(x, variant="reference")
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    expect = x / np.maximum(norms, 1e-12)
    assert rel_err(fast, ref) < 1e-6 and rel_err(ref, expect) < 1e-6
    assert not fast[0].any()


@pytest.mark.parametrize("L,E,K", [(1, 3, 4), (2, 17, 4), (40, 64, 4), (9, 33, 2), (5, 8, 1), (3, 20, 6),
                                   (7, 2100, 4), (6, 300, 40), (4, 200, 64)])  # the last three: several tiles
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("variant", VARIANTS)
def test_conv_silu(L, E, K, with_state, threads, variant):
    rng = np.random.default_rng(L + E + K)
    x, w, b = rand(rng, L, E), rand(rng, E, K), rand(rng, E)
    state = rand(rng, K - 1, E) if with_state else None
    out, new_state = _C.op_conv_silu(x, w, b, state, variant=variant, threads=threads)
    ref_out, ref_state = _C.op_conv_silu(x, w, b, state, variant="reference")
    assert rel_err(out, ref_out) < 1e-6
    np.testing.assert_array_equal(new_state, ref_state)
    # the definition, from scratch: causal conv over [state; x], then SiLU
    hist = np.concatenate([state if with_state else np.zeros((K - 1, E), np.float32), x]).astype(np.float64)
    pre = np.stack([b + (w * hist[t:t + K].T).sum(1) for t in range(L)])
    assert rel_err(ref_out, pre / (1 + np.exp(-pre))) < 1e-6
    np.testing.assert_array_equal(ref_state, hist[len(hist) - (K - 1):].astype(np.float32))


def test_conv_state_carries_across_segments():
    rng = np.random.default_rng(7)
    x, w, b = rand(rng, 11, 24), rand(rng, 24, 4), rand(rng, 24)
    whole, _ = _C.op_conv_silu(x, w, b)
    state, parts = None, []
    for lo, hi in [(0, 1), (1, 2), (2, 7), (7, 11)]:  # parts shorter than K-1 too
        out, state = _C.op_conv_silu(np.ascontiguousarray(x[lo:hi]), w, b, state)
        parts.append(out)
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-6, atol=1e-7)


def scan_numpy(u, dt, A, B, C, dt_bias, D, z, state):
    """The selective scan in float64, from its definition."""
    u, dt, A, B, C = (a.astype(np.float64) for a in (u, dt, A, B, C))
    delta = dt + (dt_bias if dt_bias is not None else 0.0)
    delta = np.where(delta > 20, delta, np.log1p(np.exp(np.minimum(delta, 20))))
    h = state.astype(np.float64).copy() if state is not None else np.zeros(A.shape)
    ys = []
    for t in range(u.shape[0]):
        h = np.exp(delta[t][:, None] * A) * h + (delta[t][:, None] * B[t][None, :]) * u[t][:, None]
        y = h @ C[t]
        if D is not None:
            y = y + D * u[t]
        if z is not None:
            y = y * (z[t] / (1 + np.exp(-z[t].astype(np.float64))))
        ys.append(y)
    return np.array(ys), h


@pytest.mark.parametrize("L,E,N", [(1, 1, 1), (7, 17, 4), (33, 64, 16), (5, 40, 3), (2, 9, 256)])
@pytest.mark.parametrize("options", ["all", "bare", "state"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("variant", VARIANTS)
def test_selective_scan(L, E, N, options, threads, variant):
    rng = np.random.default_rng(L * 100 + E * 10 + N)
    u, dt, z = rand(rng, L, E), rand(rng, L, E), rand(rng, L, E)
    A = -np.exp(rand(rng, E, N, scale=0.5))
    B, C = rand(rng, L, N), rand(rng, L, N)
    dt_bias, D = rand(rng, E), rand(rng, E)
    state = rand(rng, E, N) if options == "state" else None
    if options == "bare":
        dt_bias = D = z = None
    y, s = _C.op_selective_scan(u, dt, A, B, C, dt_bias, D, z, state, variant=variant, threads=threads)
    y_ref, s_ref = _C.op_selective_scan(u, dt, A, B, C, dt_bias, D, z, state, variant="reference")
    y64, s64 = scan_numpy(u, dt, A, B, C, dt_bias, D, z, state)
    assert rel_err(y, y_ref) < 1e-6 and rel_err(s, s_ref) < 1e-6
    assert rel_err(y_ref, y64) < 1e-5 and rel_err(s_ref, s64) < 1e-5


def test_scan_softplus_does_not_overflow():
    E, N = 4, 2
    u = np.ones((3, E), np.float32)
    dt = np.array([[100.0, 20.5, -100.0, 88.0]] * 3, np.float32)  # exp(100) overflows float32
    A = -np.ones((E, N), np.float32)
    B = C = np.ones((3, N), np.float32)
    for variant in VARIANTS + ["reference"]:
        y, s = _C.op_selective_scan(u, dt, A, B, C, variant=variant)
        assert np.isfinite(y).all() and np.isfinite(s).all()
        y64, _ = scan_numpy(u, dt, A, B, C, None, None, None, None)
        assert rel_err(y, y64) < 1e-5


def test_scan_state_carries_across_segments():
    rng = np.random.default_rng(3)
    L, E, N = 20, 48, 16
    args = [rand(rng, L, E), rand(rng, L, E)]
    A = -np.exp(rand(rng, E, N, scale=0.5))
    B, C, z = rand(rng, L, N), rand(rng, L, N), rand(rng, L, E)
    whole, whole_state = _C.op_selective_scan(*args, A, B, C, None, None, z)
    state, parts = None, []
    for lo, hi in [(0, 1), (1, 8), (8, 20)]:
        piece = [np.ascontiguousarray(a[lo:hi]) for a in args]
        y, state = _C.op_selective_scan(*piece, A, np.ascontiguousarray(B[lo:hi]), np.ascontiguousarray(C[lo:hi]),
                                        None, None, np.ascontiguousarray(z[lo:hi]), state)
        parts.append(y)
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state, whole_state, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("isa", ["avx2", "avx512"])
def test_simd_exp_and_softplus_accuracy(isa):
    try:
        _C.op_vector_math("exp", isa, np.zeros(1, np.float32))
    except RuntimeError:
        pytest.skip(f"this CPU has no {isa}")
    x = np.concatenate([np.linspace(-87, 88, 200001), np.linspace(-1e-3, 1e-3, 1001)]).astype(np.float32)
    exact = np.exp(x.astype(np.float64))
    assert np.max(np.abs(_C.op_vector_math("exp", isa, x) / exact - 1)) < 3e-7
    y = np.concatenate([np.linspace(-60, 60, 200001), [20.0, 20.001, 19.999, -1e-8]]).astype(np.float32)
    y64 = y.astype(np.float64)
    exact = np.where(y64 > 20, y64, np.log1p(np.exp(y64)))
    assert np.max(np.abs(_C.op_vector_math("softplus", isa, y) / exact - 1)) < 3e-7


@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (7, 13, 5), (64, 96, 48), (100, 3, 768), (5, 4, 0)])
@pytest.mark.parametrize("fallback", [False, True])
def test_gemm(M, N, K, fallback):
    rng = np.random.default_rng(M + N + K)
    a, w, bias, acc = rand(rng, M, K), rand(rng, N, K), rand(rng, N), rand(rng, M, N)
    expect = a.astype(np.float64) @ w.T.astype(np.float64)
    got = _C.op_gemm(a, w, fallback=fallback, threads=2)
    assert got.shape == (M, N)
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-4)
    got = _C.op_gemm(a, w, bias=bias, out=acc, fallback=fallback)
    np.testing.assert_allclose(got, expect + bias + acc, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("T,N,K,lda", [(1, 1, 1, 1), (7, 80, 1536, 1536), (13, 1536, 48, 80), (30, 75, 33, 40),
                                       (61, 17, 5, 5), (4, 96, 64, 96)])
@pytest.mark.parametrize("threads", [1, 2])
def test_linear_packed(T, N, K, lda, threads):
    """x_proj / dt_proj through packed weights: every row tail and partial column group."""
    rng = np.random.default_rng(T * N + K)
    a, w = rand(rng, T, lda), rand(rng, N, K)
    got = _C.op_linear_packed(a, w, threads=threads)
    ref = _C.op_linear_packed(a, w, variant="reference")
    expect = a[:, :K].astype(np.float64) @ w.T.astype(np.float64)
    assert got.shape == (T, N)
    assert not np.isnan(got).any()
    assert rel_err(got, ref) < 1e-6 and rel_err(ref, expect) < 1e-6


def test_kernel_inputs_are_checked():
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(TypeError, match="float32"):
        _C.op_rmsnorm(x.astype(np.float64), np.ones(4, np.float32), 1e-5)
    with pytest.raises(ValueError, match="contiguous"):
        _C.op_rmsnorm(np.zeros((4, 2), np.float32).T, np.ones(4, np.float32), 1e-5)
    with pytest.raises(ValueError, match="shape"):
        _C.op_rmsnorm(x, np.ones(3, np.float32), 1e-5)
    with pytest.raises(ValueError, match="threads"):
        _C.op_rmsnorm(x, np.ones(4, np.float32), 1e-5, threads=0)
    with pytest.raises(ValueError, match="weight must be"):
        _C.op_linear_packed(x, np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="no portable variant"):
        _C.op_linear_packed(x, np.ones((3, 4), np.float32), variant="portable")


@pytest.mark.skipif(bool(os.environ.get("MAMBARET_SIMD")), reason="already narrowed to one instruction set")
def test_avx2_kernels_on_an_avx512_machine():
    """The dispatcher picks the widest instruction set, so the AVX2 kernels are checked again with
    MAMBARET_SIMD=avx2 in a subprocess (the AVX-512 ones run above where the CPU has them)."""
    if _C.build_info().get("simd", "").startswith("portable"):
        pytest.skip("this CPU has no AVX2")
    env = dict(os.environ, MAMBARET_SIMD="avx2")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                          "conv_silu or selective_scan or scan_softplus or linear_packed"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
