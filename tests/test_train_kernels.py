"""The training kernels (conv + SiLU and selective scan, forward and backward over packed
batches): the fast C kernels against their C reference twins, and their gradients against
autograd through the float64 torch reference, itself checked by gradcheck."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mambaret import _C  # noqa: E402
from mambaret.nn import functional as Fn  # noqa: E402
from mambaret.nn._kernels import SCAN_CHUNK, ConvSiluFunction, SelectiveScanFunction  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The references run thousands of tiny torch ops, for which waking a second thread costs more
    than the op (and much more on a busy machine); the C kernels' threads are tested explicitly."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def offsets_of(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# lengths around the scan backward's chunk boundaries, single tokens and an empty sequence
LENGTHS = [[1], [5, 1, 17], [SCAN_CHUNK - 1, SCAN_CHUNK, SCAN_CHUNK + 1], [2 * SCAN_CHUNK + 3, 0, 2], [300, 7]]


def conv_case(seed, lengths, E, K, with_bias, ld_extra=0):
    rng = np.random.default_rng(seed)
    offsets = offsets_of(lengths)
    T = int(offsets[-1])
    x_full = rand(rng, T, E + ld_extra)
    return dict(x=x_full[:, :E], w=rand(rng, E, K), bias=rand(rng, E) if with_bias else None,
                offsets=offsets, gout=rand(rng, T, E))


def conv_backward(case, threads, reference):
    T, E = case["x"].shape
    K = case["w"].shape[1]
    gx, gw = np.full((T, E), np.nan, np.float32), np.full((E, K), np.nan, np.float32)
    gb = None if case["bias"] is None else np.full(E, np.nan, np.float32)
    _C.train_conv_silu_backward(case["x"], case["w"], case["bias"], case["offsets"], case["gout"], gx, gw, gb,
                                threads, reference)
    return gx, gw, gb


# the widest vector path this CPU runs, and the portable one (MAMBARET_SIMD is read once, at
# start; _C.set_simd_limit changes the limit for the process)
SIMD = ["auto", "portable"]


@pytest.fixture(params=SIMD)
def simd(request):
    previous = _C.set_simd_limit(request.param)
    yield request.param
    _C.set_simd_limit(previous)


@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("E,K,with_bias", [(3, 4, True), (37, 2, False), (40, 1, True), (17, 6, True)])
@pytest.mark.parametrize("threads", [1, 2])
def test_conv_backward_matches_reference(lengths, E, K, with_bias, threads, simd):
    case = conv_case(len(lengths) * E + K, lengths, E, K, with_bias, ld_extra=5)
    fast, ref = conv_backward(case, threads, False), conv_backward(case, 1, True)
    for ours, theirs in zip(fast, ref):
        if theirs is not None:
            assert np.isfinite(ours).all()
            assert rel_err(ours, theirs) < 1e-5


def scan_case(seed, lengths, E, N, options, R=3):
    rng = np.random.default_rng(seed)
    offsets = offsets_of(lengths)
    T = int(offsets[-1])
    proj = rand(rng, T, R + 2 * N)  # B and C as columns of one matrix, as x_proj writes them
    return dict(u=rand(rng, T, E), dt=rand(rng, T, E, scale=0.5) - 1.0,
                dt_bias=rand(rng, E, scale=0.5) if "bias" in options else None,
                A=-np.exp(rand(rng, E, N, scale=0.5)), B=proj[:, R:R + N], C=proj[:, R + N:],
                D=rand(rng, E) if "D" in options else None, z=rand(rng, T, E) if "z" in options else None,
                offsets=offsets, gy=rand(rng, T, E))


def scan_inputs(c):
    return c["u"], c["dt"], c["dt_bias"], c["A"], c["B"], c["C"], c["D"], c["z"], c["offsets"]


def scan_backward(case, threads, reference, chunk=SCAN_CHUNK):
    T, E = case["u"].shape
    N = case["A"].shape[1]
    boundaries = np.full(_C.train_scan_boundary_count(case["offsets"], chunk) * E * N, np.nan, np.float32)
    y = np.full((T, E), np.nan, np.float32)
    _C.train_selective_scan(*scan_inputs(case), chunk, y, boundaries, threads)

    def out(*shape, present=True):
        return np.full(shape, np.nan, np.float32) if present else None

    grads = [out(T, E), out(T, E), out(E, present=case["dt_bias"] is not None), out(E, N), out(T, N), out(T, N),
             out(E, present=case["D"] is not None), out(T, E, present=case["z"] is not None)]
    _C.train_selective_scan_backward(*scan_inputs(case), chunk, boundaries, case["gy"], *grads, threads, reference)
    return y, grads


@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("E,N,options", [(5, 4, ("bias", "D", "z")), (37, 16, ()), (16, 1, ("z",)),
                                         (24, 8, ("bias", "D"))])
@pytest.mark.parametrize("threads", [1, 2])
def test_scan_backward_matches_reference(lengths, E, N, options, threads, simd):
    case = scan_case(E * N + len(lengths), lengths, E, N, options)
    _, fast = scan_backward(case, threads, False)
    _, ref = scan_backward(case, 1, True)
    for name, ours, theirs in zip(("u", "dt", "dt_bias", "A", "B", "C", "D", "z"), fast, ref):
        if theirs is not None:
            assert np.isfinite(ours).all(), name
            assert rel_err(ours, theirs) < 2e-5, name


@pytest.mark.parametrize("chunk", [1, 3, 64, 1000])
def test_scan_chunk_size_changes_nothing(chunk):
    """The boundary states the forward keeps and the backward resumes from, at any chunk size."""
    case = scan_case(7, [130, 1, 66], 20, 6, ("bias", "D", "z"))
    y_ref, g_ref = scan_backward(case, 2, False, chunk=SCAN_CHUNK)
    y, g = scan_backward(case, 2, False, chunk=chunk)
    assert rel_err(y, y_ref) < 1e-6
    for ours, theirs in zip(g, g_ref):
        assert rel_err(ours, theirs) < 2e-5


def test_scan_forward_matches_the_inference_kernel_per_sequence():
    case = scan_case(3, [70, 9], 24, 8, ("bias", "D", "z"))
    y, _ = scan_backward(case, 1, False)
    for s in range(2):
        lo, hi = case["offsets"][s], case["offsets"][s + 1]
        part = {k: (v[lo:hi] if isinstance(v, np.ndarray) and v.shape[0] == case["u"].shape[0] else v)
                for k, v in case.items()}
        ref = _C.op_selective_scan(part["u"], part["dt"], part["A"], np.ascontiguousarray(part["B"]),
                                   np.ascontiguousarray(part["C"]), dt_bias=part["dt_bias"], D=part["D"], z=part["z"],
                                   variant="reference")
        ref = ref[0] if isinstance(ref, tuple) else ref
        assert rel_err(y[lo:hi], ref) < 1e-5


def test_boundary_count():
    offsets = offsets_of([0, 1, 64, 65, 200])
    assert _C.train_scan_boundary_count(offsets, 64) == 0 + 0 + 0 + 1 + 3
    assert _C.train_scan_boundary_count(offsets, 1) == 0 + 0 + 63 + 64 + 199


def test_inputs_are_checked():
    case = scan_case(1, [4], 6, 3, ("bias", "D", "z"))
    T, E = case["u"].shape
    with pytest.raises(ValueError, match="offsets"):
        _C.train_scan_boundary_count(np.array([1, 4], np.int64), 64)
    with pytest.raises(ValueError, match="decrease"):
        _C.train_scan_boundary_count(np.array([0, 4, 2], np.int64), 64)
    with pytest.raises(ValueError, match="shape"):  # offsets end past the rows
        _C.train_selective_scan(*scan_inputs({**case, "offsets": offsets_of([5])}), 64, np.zeros((5, E), np.float32),
                                np.zeros(0, np.float32), 1)
    with pytest.raises(TypeError, match="float32"):
        _C.train_selective_scan(*scan_inputs({**case, "u": case["u"].astype(np.float64)}), 64,
                                np.zeros((T, E), np.float32), np.zeros(0, np.float32), 1)
    with pytest.raises(ValueError, match="N <="):
        big = scan_case(1, [2], 2, _C.MAX_STATE_SIZE + 1, ())
        _C.train_selective_scan(*scan_inputs(big), 64, np.zeros((2, 2), np.float32), np.zeros(0, np.float32), 1)
    with pytest.raises(ValueError, match="threads"):
        _C.train_selective_scan(*scan_inputs(case), 64, np.zeros((T, E), np.float32), np.zeros(0, np.float32), 0)
    with pytest.raises(ValueError, match="chunk"):
        _C.train_selective_scan(*scan_inputs(case), 0, np.zeros((T, E), np.float32), np.zeros(0, np.float32), 1)
    with pytest.raises(ValueError):  # read-only output
        y = np.zeros((T, E), np.float32)
        y.flags.writeable = False
        _C.train_selective_scan(*scan_inputs(case), 64, y, np.zeros(0, np.float32), 1)
    conv = conv_case(1, [3], 4, 4, True)
    with pytest.raises(ValueError, match="K"):
        _C.train_conv_silu(conv["x"], np.zeros((4, _C.MAX_CONV_KERNEL + 1), np.float32), None, conv["offsets"],
                           np.zeros((3, 4), np.float32), 1)


# -- the torch side: autograd Functions against the float64 reference -------------------------

def test_float64_references_pass_gradcheck():
    gen = torch.Generator().manual_seed(0)
    offsets = torch.tensor([0, 1, 2, 5], dtype=torch.int64)
    T, E, N, K = 5, 2, 2, 3

    def r(*shape, scale=1.0):
        return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).requires_grad_()

    x, w, b = r(T, E), r(E, K), r(E)
    assert torch.autograd.gradcheck(lambda x, w, b: Fn.conv_silu_reference(x, w, b, offsets), (x, w, b),
                                    fast_mode=True)
    u, dt, dt_bias, A = r(T, E), r(T, E, scale=0.5), r(E, scale=0.5), (-torch.rand(E, N, generator=gen,
                                                                                  dtype=torch.float64)).requires_grad_()
    B, C, D, z = r(T, N), r(T, N), r(E), r(T, E)
    assert torch.autograd.gradcheck(lambda *a: Fn.selective_scan_reference(*a, offsets),
                                    (u, dt, dt_bias, A, B, C, D, z), fast_mode=True)
    # above softplus's threshold the time step is the identity, as in torch
    big = (dt.detach() + 25.0).requires_grad_()
    assert torch.autograd.gradcheck(lambda dt: Fn.selective_scan_reference(u, dt, dt_bias, A, B, C, D, z, offsets),
                                    (big,), fast_mode=True)


def _leaf(a):
    return torch.from_numpy(np.array(a, np.float64)).requires_grad_() if a is not None else None


@pytest.mark.parametrize("lengths", [[1, 5, 17], [SCAN_CHUNK + 1, 1], [300]])
@pytest.mark.parametrize("threads", [1, 2])
def test_functions_match_float64_autograd(lengths, threads):
    case = scan_case(11, lengths, 19, 5, ("bias", "D", "z"))
    offsets = torch.from_numpy(case["offsets"])
    names = ("u", "dt", "dt_bias", "A", "B", "C", "D", "z")
    ref_inputs = [_leaf(case[k]) for k in names]
    gy = torch.from_numpy(case["gy"])
    ref_y = Fn.selective_scan_reference(*ref_inputs, offsets)
    ref_g = torch.autograd.grad(ref_y, ref_inputs, gy.double())
    ours_inputs = [t.detach().float().requires_grad_() for t in ref_inputs]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        y = SelectiveScanFunction.apply(*ours_inputs, offsets)
        g = torch.autograd.grad(y, ours_inputs, gy)
        assert rel_err(y.detach(), ref_y.detach()) < 1e-5
        for name, ours, theirs in zip(names, g, ref_g):
            assert rel_err(ours, theirs) < 1e-4, name

        conv = conv_case(12, lengths, 19, 4, True)
        ref_in = [_leaf(conv[k]) for k in ("x", "w", "bias")]
        ref_out = Fn.conv_silu_reference(*ref_in, offsets)
        gout = torch.from_numpy(conv["gout"])
        ref_g = torch.autograd.grad(ref_out, ref_in, gout.double())
        ours_in = [t.detach().float().requires_grad_() for t in ref_in]
        out = ConvSiluFunction.apply(*ours_in, offsets)
        g = torch.autograd.grad(out, ours_in, gout)
        assert rel_err(out.detach(), ref_out.detach()) < 1e-5
        for ours, theirs in zip(g, ref_g):
            assert rel_err(ours, theirs) < 1e-4
    finally:
        torch.set_num_threads(previous)
