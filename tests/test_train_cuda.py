"""The CUDA training kernels (conv + SiLU, the selective scan and Mamba-2's SSD scan, forward and
backward over packed batches) against the C kernels on the CPU, which test_train_kernels.py and
test_mamba2.py check against their references and float64 autograd; and whole models' gradients
(Mamba-1 and Mamba-2) on the GPU against the CPU's.
Everything here is skipped where torch cannot see a GPU or mambaret._cuda is not usable."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mambaret.nn import _kernels  # noqa: E402
from mambaret.nn import functional as Fn  # noqa: E402
from mambaret.nn._kernels import SCAN_CHUNK  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="torch cannot see a GPU"),
              pytest.mark.skipif(not _kernels.cuda_available(), reason="the CUDA training kernels are not usable")]

SCAN_NAMES = ("u", "dt", "dt_bias", "A", "B", "C", "D", "z")
# lengths around the chunk boundaries, single tokens, an empty sequence, more sequences than the
# backward's slots (128) and the forward's piece table (240)
LENGTHS = [[1], [5, 1, 17], [SCAN_CHUNK - 1, SCAN_CHUNK, SCAN_CHUNK + 1], [2 * SCAN_CHUNK + 3, 0, 2], [300, 7],
           [3, 1, 2, 65] * 70]


def rel_err(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / max(float(b.norm()), 1e-30))


def offsets_of(lengths):
    return torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int64)


def scan_inputs(seed, lengths, E, N, options, R=3):
    """CPU float32 leaves; B and C are column views of one x_proj-like matrix, u a strided view."""
    gen = torch.Generator().manual_seed(seed)
    T = sum(lengths)

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen) * scale

    proj = rand(T, R + 2 * N)
    wide = rand(T, E + 7)
    return dict(u=wide[:, 3:3 + E], dt=rand(T, E, scale=0.5) - 1.0,
                dt_bias=rand(E, scale=0.5) if "bias" in options else None, A=-torch.exp(rand(E, N, scale=0.5)),
                B=proj[:, R:R + N], C=proj[:, R + N:], D=rand(E) if "D" in options else None,
                z=rand(T, E) if "z" in options else None), rand(T, E)


def grads_on(device, inputs, gy, offsets, op):
    leaves = {k: None if v is None else v.detach().to(device).requires_grad_() for k, v in inputs.items()}
    out = op(leaves, offsets)
    out.backward(gy.to(device))
    return out.detach(), {k: None if v is None else v.grad for k, v in leaves.items()}


def scan_op(leaves, offsets):
    return Fn.selective_scan(*(leaves[k] for k in SCAN_NAMES), offsets)


@pytest.mark.parametrize("lengths", LENGTHS, ids=lambda ls: f"{len(ls)}seqs")
@pytest.mark.parametrize("E,N,options", [(5, 4, ("bias", "D", "z")), (37, 16, ()), (16, 1, ("z",)),
                                         (70, 8, ("bias", "D")), (33, 33, ("bias", "D", "z"))])
def test_scan_matches_the_cpu_kernels(lengths, E, N, options):
    inputs, gy = scan_inputs(E * N + len(lengths), lengths, E, N, options)
    offsets = offsets_of(lengths)
    y_cpu, g_cpu = grads_on("cpu", inputs, gy, offsets, scan_op)
    y_gpu, g_gpu = grads_on("cuda", inputs, gy, offsets, scan_op)
    assert rel_err(y_gpu, y_cpu) < 1e-5
    for name in SCAN_NAMES:
        if g_cpu[name] is not None:
            assert torch.isfinite(g_gpu[name]).all(), name
            assert rel_err(g_gpu[name], g_cpu[name]) < 1e-4, name


def test_scan_forward_keeps_the_cpu_boundary_states():
    lengths = [SCAN_CHUNK * 3 + 5, 1, SCAN_CHUNK + 1]
    inputs, _ = scan_inputs(3, lengths, 40, 16, ("bias", "D", "z"))
    offsets = offsets_of(lengths)
    args = [inputs[k] for k in SCAN_NAMES]
    cpu_ctx, gpu_ctx = _Ctx(), _Ctx()
    cpu = _kernels.SelectiveScanFunction.forward(cpu_ctx, *args, offsets)
    gpu_args = [None if a is None else a.cuda() for a in args]
    positions = Fn.sequence_positions(offsets, sum(lengths)).to("cuda", torch.int32)
    gpu = _kernels.CudaSelectiveScanFunction.forward(gpu_ctx, *gpu_args, offsets, positions)
    assert rel_err(gpu, cpu) < 1e-5
    kept_cpu, kept_gpu = cpu_ctx.saved_tensors[8], gpu_ctx.saved_tensors[8]
    assert kept_cpu.numel() == (3 + 0 + 1) * 40 * 16
    assert rel_err(kept_gpu[:kept_cpu.numel()], kept_cpu) < 1e-5


class _Ctx:
    """Stands in for autograd's context, to look at what a forward keeps."""

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors


@pytest.mark.parametrize("lengths", LENGTHS[:5], ids=lambda ls: f"{len(ls)}seqs")
@pytest.mark.parametrize("E,K,with_bias", [(3, 4, True), (37, 2, False), (40, 1, True), (130, 6, True)])
def test_conv_matches_the_cpu_kernels(lengths, E, K, with_bias):
    gen = torch.Generator().manual_seed(E * K)
    T = sum(lengths)
    inputs = dict(x=torch.randn(T, E + 5, generator=gen)[:, 2:2 + E], w=torch.randn(E, K, generator=gen),
                  bias=torch.randn(E, generator=gen) if with_bias else None)
    gy = torch.randn(T, E, generator=gen)
    offsets = offsets_of(lengths)

    def conv_op(leaves, offsets):
        return Fn.conv_silu(leaves["x"], leaves["w"], leaves["bias"], offsets)

    out_cpu, g_cpu = grads_on("cpu", inputs, gy, offsets, conv_op)
    out_gpu, g_gpu = grads_on("cuda", inputs, gy, offsets, conv_op)
    assert rel_err(out_gpu, out_cpu) < 1e-5
    for name, grad in g_cpu.items():
        if grad is not None:
            assert rel_err(g_gpu[name], grad) < 1e-5, name


def test_backward_is_deterministic():
    """Partial sums are added in a fixed order: two backward passes agree bit for bit."""
    lengths = [500, 3, 130] * 5
    inputs, gy = scan_inputs(5, lengths, 96, 16, ("bias", "D", "z"))
    offsets = offsets_of(lengths)
    _, first = grads_on("cuda", inputs, gy, offsets, scan_op)
    _, second = grads_on("cuda", inputs, gy, offsets, scan_op)
    for name in SCAN_NAMES:
        assert torch.equal(first[name], second[name]), name


def test_half_inputs_are_widened_and_their_gradients_narrowed():
    lengths = [40, 9]
    inputs, gy = scan_inputs(6, lengths, 24, 8, ("bias", "D", "z"))
    offsets = offsets_of(lengths)
    half = {k: None if v is None else (v.bfloat16() if k in ("u", "dt", "B", "C", "z") else v) for k, v in inputs.items()}
    y, grads = grads_on("cuda", half, gy, offsets, scan_op)
    assert y.dtype == torch.float32
    for name in ("u", "dt", "B", "C", "z"):
        assert grads[name].dtype == torch.bfloat16, name
    y_ref, _ = grads_on("cpu", {k: None if v is None else v.float() for k, v in half.items()}, gy, offsets, scan_op)
    assert rel_err(y, y_ref) < 1e-5


def assert_model_gradients_match(hf, vocab: int, lengths: list[int]) -> None:
    """A mambaret.nn model built from `hf`: its packed forward and every parameter's gradient on
    the GPU against the CPU."""
    from mambaret.nn import MambaModel
    from mambaret.nn.model import offsets_from_lengths

    tokens = torch.randint(0, vocab, (sum(lengths),), generator=torch.Generator().manual_seed(0))
    offsets = offsets_from_lengths(lengths)
    results = []
    for device in ("cpu", "cuda"):
        model = MambaModel(hf.config)
        model.load_state_dict(hf.state_dict())
        model.to(device)
        hidden = model.forward_packed(tokens.to(device), offsets)
        hidden.square().sum().backward()
        results.append((hidden.detach().cpu(), {n: p.grad.cpu() for n, p in model.named_parameters()}))
    (h_cpu, g_cpu), (h_gpu, g_gpu) = results
    assert rel_err(h_gpu, h_cpu) < 1e-4
    for name, grad in g_cpu.items():
        assert rel_err(g_gpu[name], grad) < 1e-4, name


def test_model_gradients_on_the_gpu_match_the_cpu():
    from conftest import build_hf_model

    hf = build_hf_model(dict(hidden_size=37, num_hidden_layers=2, vocab_size=101, state_size=4, conv_kernel=3,
                             expand=3, use_bias=True, use_conv_bias=True), seed=2)
    assert_model_gradients_match(hf, 101, [1, 70, 9])


# --- Mamba-2's SSD scan

SSD_NAMES = ("x", "dt", "dt_bias", "A", "B", "C", "D")


def ssd_inputs(seed, lengths, H, P, G, N, with_bias_and_D=True):
    """CPU float32 leaves laid out as the mixer makes them: x, B and C column views of one conv
    output, dt a column view of a wider projection."""
    gen = torch.Generator().manual_seed(seed)
    T, E = sum(lengths), H * P

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen) * scale

    xbc = rand(T, E + 2 * G * N)
    proj = rand(T, H + 5, scale=0.7) - 1.5
    return dict(x=xbc[:, :E], dt=proj[:, 2:2 + H], dt_bias=rand(H, scale=0.5) if with_bias_and_D else None,
                A=-torch.exp(rand(H, scale=0.5)), B=xbc[:, E:E + G * N], C=xbc[:, E + G * N:],
                D=rand(H) if with_bias_and_D else None), rand(T, E)


def ssd_op(H, G, limit):
    def op(leaves, offsets):
        return Fn.ssd_scan(*(leaves[k] for k in SSD_NAMES), offsets, H, G, limit)

    return op


# heads, head size, groups, state size, dt limit: channel tiles of 32 partly filled, groups of one
# head and of several, N from 1 to past the warps' share, deltas clamped on both sides
SSD_SHAPES = [(4, 8, 2, 5, (0.05, 1.5)), (3, 40, 1, 16, (0.0, float("inf"))), (6, 16, 6, 1, (0.01, 0.3)),
              (2, 64, 1, 33, (0.0, 0.5)), (8, 33, 4, 8, (0.02, float("inf")))]


@pytest.mark.parametrize("lengths", LENGTHS, ids=lambda ls: f"{len(ls)}seqs")
@pytest.mark.parametrize("H,P,G,N,limit", SSD_SHAPES, ids=lambda v: str(v))
def test_ssd_scan_matches_the_cpu_kernels(lengths, H, P, G, N, limit):
    inputs, gy = ssd_inputs(H * P + N + len(lengths), lengths, H, P, G, N)
    offsets = offsets_of(lengths)
    op = ssd_op(H, G, limit)
    y_cpu, g_cpu = grads_on("cpu", inputs, gy, offsets, op)
    y_gpu, g_gpu = grads_on("cuda", inputs, gy, offsets, op)
    assert rel_err(y_gpu, y_cpu) < 1e-5
    for name in SSD_NAMES:
        assert torch.isfinite(g_gpu[name]).all(), name
        assert rel_err(g_gpu[name], g_cpu[name]) < 1e-4, name


def test_ssd_scan_without_bias_and_skip_matches_the_reference():
    lengths = [SCAN_CHUNK + 3, 20]
    H, P, G, N, limit = 4, 12, 2, 6, (0.0, 0.8)
    inputs, gy = ssd_inputs(9, lengths, H, P, G, N, with_bias_and_D=False)
    offsets = offsets_of(lengths)
    y_gpu, g_gpu = grads_on("cuda", inputs, gy, offsets, ssd_op(H, G, limit))

    def reference(leaves, offsets):
        return Fn.ssd_scan_reference(*(leaves[k] for k in SSD_NAMES), offsets, H, G, limit)

    double = {k: None if v is None else v.double() for k, v in inputs.items()}
    y_ref, g_ref = grads_on("cpu", double, gy.double(), offsets, reference)
    assert rel_err(y_gpu, y_ref) < 1e-5
    for name in ("x", "dt", "A", "B", "C"):
        assert rel_err(g_gpu[name], g_ref[name]) < 1e-4, name


def test_ssd_scan_backward_is_deterministic():
    lengths = [500, 3, 130] * 5
    H, P, G, N = 8, 64, 2, 32
    inputs, gy = ssd_inputs(5, lengths, H, P, G, N)
    offsets = offsets_of(lengths)
    op = ssd_op(H, G, (0.0, float("inf")))
    _, first = grads_on("cuda", inputs, gy, offsets, op)
    _, second = grads_on("cuda", inputs, gy, offsets, op)
    for name in SSD_NAMES:
        assert torch.equal(first[name], second[name]), name


def test_ssd_scan_half_inputs_are_widened_and_their_gradients_narrowed():
    lengths = [70, 9]
    H, P, G, N = 4, 8, 2, 8
    inputs, gy = ssd_inputs(6, lengths, H, P, G, N)
    offsets = offsets_of(lengths)
    half = {k: None if v is None else (v.bfloat16() if k in ("x", "dt", "B", "C") else v) for k, v in inputs.items()}
    op = ssd_op(H, G, (0.0, float("inf")))
    y, grads = grads_on("cuda", half, gy, offsets, op)
    assert y.dtype == torch.float32
    for name in ("x", "dt", "B", "C"):
        assert grads[name].dtype == torch.bfloat16, name
    y_ref, _ = grads_on("cpu", {k: None if v is None else v.float() for k, v in half.items()}, gy, offsets, op)
    assert rel_err(y, y_ref) < 1e-5


def test_mamba2_model_gradients_on_the_gpu_match_the_cpu():
    from conftest import build_hf_model

    hf = build_hf_model(dict(hidden_size=32, num_hidden_layers=2, vocab_size=60, num_heads=4, head_dim=16, n_groups=2,
                             state_size=8, conv_kernel=4, expand=2, use_bias=True, time_step_limit=(0.0, 0.7)),
                        seed=2, family="mamba2")
    assert_model_gradients_match(hf, 60, [1, 70, 9, SCAN_CHUNK])
