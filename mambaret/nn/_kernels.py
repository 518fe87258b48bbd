"""autograd Functions over the training kernels: C on the CPU (mambaret._C.train_*), CUDA on a GPU
(mambaret._C.cuda_train_*, kernels in mambaret._cuda).

CPU tensors reach C as NumPy views (no copy); GPU tensors as device pointers, on torch's current
stream. Outputs and gradients are allocated here by torch. CPU threads: torch.get_num_threads(),
the team torch's own GEMMs use.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

# tokens per chunk of the scan's backward: the forward keeps one [E, N] state per chunk, the
# backward recomputes the chunk's states from it
SCAN_CHUNK = 64


def _native():
    try:
        from .. import _C
    except ImportError:
        return None
    return _C if hasattr(_C, "train_selective_scan_backward") else None


def available() -> bool:
    return _native() is not None


def cuda_available() -> bool:
    """The CUDA training kernels can run: the extension has them and mambaret._cuda sees a GPU."""
    native = _native()
    if native is None or not hasattr(native, "cuda_train_selective_scan"):
        return False
    from ..encoding.cuda import cuda_available as module_usable

    return module_usable()


def _rows(t: torch.Tensor | None) -> torch.Tensor | None:
    """A [T, n] or [n] float32 tensor whose last dimension is contiguous, detached."""
    if t is None:
        return None
    t = t.detach()
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        t = t.contiguous()
    if t.dim() == 2 and t.shape[0] > 1 and t.stride(0) < t.shape[1]:
        t = t.contiguous()
    return t


def _np(t: torch.Tensor | None):
    return None if t is None else t.numpy()


def _threads() -> int:
    return max(1, torch.get_num_threads())


class ConvSiluFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, offsets):
        x, weight, bias = _rows(x), weight.detach().contiguous(), _rows(bias)
        out = torch.empty(x.shape, dtype=torch.float32)
        _native().train_conv_silu(x.numpy(), weight.numpy(), _np(bias), offsets.numpy(), out.numpy(), _threads())
        ctx.save_for_backward(x, weight, bias)
        ctx.offsets = offsets
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight, bias = ctx.saved_tensors
        grad_out = _rows(grad_out)
        grad_x = torch.empty(x.shape, dtype=torch.float32)
        grad_weight = torch.empty(weight.shape, dtype=torch.float32)
        grad_bias = None if bias is None else torch.empty(bias.shape, dtype=torch.float32)
        _native().train_conv_silu_backward(x.numpy(), weight.numpy(), _np(bias), ctx.offsets.numpy(), grad_out.numpy(),
                                           grad_x.numpy(), grad_weight.numpy(), _np(grad_bias), _threads(), False)
        return grad_x, grad_weight, grad_bias, None


def _bc_pair(B, C):
    """B and C as views sharing one row stride (the x_proj output's columns), else copies."""
    B, C = _rows(B), _rows(C)
    if B.shape[0] > 1 and B.stride(0) != C.stride(0):
        B, C = B.contiguous(), C.contiguous()
    return B, C


class SelectiveScanFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dt, dt_bias, A, B, C, D, z, offsets):
        u, dt, dt_bias, z, D = _rows(u), _rows(dt), _rows(dt_bias), _rows(z), _rows(D)
        A = A.detach().contiguous()
        B, C = _bc_pair(B, C)
        T, E = u.shape
        N = A.shape[1]
        native = _native()
        count = native.train_scan_boundary_count(offsets.numpy(), SCAN_CHUNK)
        boundaries = torch.empty(count * E * N, dtype=torch.float32)
        y = torch.empty((T, E), dtype=torch.float32)
        native.train_selective_scan(u.numpy(), dt.numpy(), _np(dt_bias), A.numpy(), B.numpy(), C.numpy(), _np(D),
                                    _np(z), offsets.numpy(), SCAN_CHUNK, y.numpy(), boundaries.numpy(), _threads())
        ctx.save_for_backward(u, dt, dt_bias, A, B, C, D, z, boundaries)
        ctx.offsets = offsets
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        u, dt, dt_bias, A, B, C, D, z, boundaries = ctx.saved_tensors
        grad_y = _rows(grad_y)
        T, E = u.shape
        N = A.shape[1]

        def empty(*shape):
            return torch.empty(shape, dtype=torch.float32)

        grads = dict(u=empty(T, E), dt=empty(T, E), dt_bias=None if dt_bias is None else empty(E), A=empty(E, N),
                     B=empty(T, N), C=empty(T, N), D=None if D is None else empty(E), z=None if z is None else empty(T, E))
        _native().train_selective_scan_backward(
            u.numpy(), dt.numpy(), _np(dt_bias), A.numpy(), B.numpy(), C.numpy(), _np(D), _np(z), ctx.offsets.numpy(),
            SCAN_CHUNK, boundaries.numpy(), grad_y.numpy(), *(_np(grads[k]) for k in ("u", "dt", "dt_bias", "A", "B", "C", "D", "z")),
            _threads(), False)
        return grads["u"], grads["dt"], grads["dt_bias"], grads["A"], grads["B"], grads["C"], grads["D"], grads["z"], None


# ------------------------------------------------------------------------------------------
# CUDA: float32 device tensors (functional.py widens half inputs), rows contiguous; the kernels
# run on torch's current stream


def _dense(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().contiguous()


class SsdScanFunction(torch.autograd.Function):
    """Mamba-2's scan (functional.ssd_scan) with the C kernels both ways; the backward recomputes
    the states from checkpoints, so the forward keeps nothing beyond its inputs."""

    @staticmethod
    def forward(ctx, x, dt, dt_bias, A, B, C, D, offsets, heads, groups, dt_min, dt_max):
        from .. import _C

        inputs = [_dense(t) for t in (x, dt, dt_bias, A, B, C, D)]
        y = torch.empty_like(inputs[0])
        _C.train_ssd_scan(*map(_np, inputs), offsets.numpy(), heads, groups, dt_min, dt_max, y.numpy(), _threads())
        ctx.save_for_backward(*[t for t in inputs if t is not None], offsets)
        ctx.present = [t is not None for t in inputs]
        ctx.shape = (heads, groups, dt_min, dt_max)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        from .. import _C

        saved = iter(ctx.saved_tensors)
        x, dt, dt_bias, A, B, C, D = [next(saved) if present else None for present in ctx.present]
        offsets = next(saved)
        heads, groups, dt_min, dt_max = ctx.shape
        T, N = x.shape[0], B.shape[1] // groups
        gx, gdt, gA = torch.empty_like(x), torch.empty_like(dt), torch.empty_like(A)
        gdt_bias = None if dt_bias is None else torch.empty_like(dt_bias)
        gD = None if D is None else torch.empty_like(D)
        gB_heads, gC_heads = x.new_empty((T, heads * N)), x.new_empty((T, heads * N))
        _C.train_ssd_scan_backward(*map(_np, (x, dt, dt_bias, A, B, C, D)), offsets.numpy(), heads, groups, dt_min,
                                   dt_max, *map(_np, (_dense(grad_y), gx, gdt, gdt_bias, gA, gB_heads, gC_heads, gD)),
                                   _threads())
        # B and C are shared by the heads of a group: sum each group's heads
        gB = gB_heads.view(T, groups, heads // groups, N).sum(2).view(T, groups * N)
        gC = gC_heads.view(T, groups, heads // groups, N).sum(2).view(T, groups * N)
        return gx, gdt, gdt_bias, gA, gB, gC, gD, None, None, None, None, None


def _ptr(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _launch_context(t: torch.Tensor):
    return t.device.index, torch.cuda.current_stream(t.device).cuda_stream


def _row_stride(t: torch.Tensor) -> int:
    return t.stride(0) if t.dim() == 2 and t.shape[0] > 1 else t.shape[-1]


class CudaConvSiluFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, positions):
        x, weight, bias = _rows(x), weight.detach().contiguous(), _rows(bias)
        T, E = x.shape
        out = torch.empty((T, E), dtype=torch.float32, device=x.device)
        device, stream = _launch_context(x)
        _native().cuda_train_conv_silu(device, stream, T, E, weight.shape[1], _ptr(positions), _ptr(x), _row_stride(x),
                                       _ptr(weight), _ptr(bias), _ptr(out))
        ctx.save_for_backward(x, weight, bias, positions)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight, bias, positions = ctx.saved_tensors
        grad_out = _rows(grad_out)
        T, E = x.shape
        grad_x = torch.empty((T, E), dtype=torch.float32, device=x.device)
        grad_weight = torch.empty(weight.shape, dtype=torch.float32, device=x.device)
        grad_bias = None if bias is None else torch.empty(bias.shape, dtype=torch.float32, device=x.device)
        device, stream = _launch_context(x)
        _native().cuda_train_conv_silu(device, stream, T, E, weight.shape[1], _ptr(positions), _ptr(x), _row_stride(x),
                                       _ptr(weight), _ptr(bias), 0, gout=_ptr(grad_out), ldgo=_row_stride(grad_out),
                                       gx=_ptr(grad_x), gw=_ptr(grad_weight), gbias=_ptr(grad_bias), backward=True)
        return grad_x, grad_weight, grad_bias, None


def _scan_call(u, dt, dt_bias, A, B, C, D, z, offsets, positions, boundaries, **extra):
    T, E = u.shape
    device, stream = _launch_context(u)
    _native().cuda_train_selective_scan(
        device, stream, offsets.numel() - 1, _ptr(offsets), T, E, A.shape[1], _ptr(positions), _ptr(u),
        _row_stride(u), _ptr(dt), _row_stride(dt), _ptr(dt_bias), _ptr(A), _ptr(B), _ptr(C), _row_stride(B), _ptr(D),
        _ptr(z), 0 if z is None else _row_stride(z), _ptr(boundaries), **extra)


class CudaSelectiveScanFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dt, dt_bias, A, B, C, D, z, offsets, positions):
        u, dt, dt_bias, z, D = _rows(u), _rows(dt), _rows(dt_bias), _rows(z), _rows(D)
        A = A.detach().contiguous()
        B, C = _bc_pair(B, C)
        T, E = u.shape
        count = _native().train_scan_boundary_count(offsets.numpy(), SCAN_CHUNK)
        boundaries = torch.empty(max(count, 1) * E * A.shape[1], dtype=torch.float32, device=u.device)
        y = torch.empty((T, E), dtype=torch.float32, device=u.device)
        _scan_call(u, dt, dt_bias, A, B, C, D, z, offsets, positions, boundaries, y=_ptr(y))
        ctx.save_for_backward(u, dt, dt_bias, A, B, C, D, z, boundaries, positions)
        ctx.offsets = offsets
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        u, dt, dt_bias, A, B, C, D, z, boundaries, positions = ctx.saved_tensors
        grad_y = _rows(grad_y)
        T, E = u.shape
        N = A.shape[1]

        def empty(*shape):
            return torch.empty(shape, dtype=torch.float32, device=u.device)

        grads = dict(u=empty(T, E), dt=empty(T, E), dt_bias=None if dt_bias is None else empty(E), A=empty(E, N),
                     B=empty(T, N), C=empty(T, N), D=None if D is None else empty(E), z=None if z is None else empty(T, E))
        _scan_call(u, dt, dt_bias, A, B, C, D, z, ctx.offsets, positions, boundaries, gy=_ptr(grad_y),
                   ldgy=_row_stride(grad_y), backward=True, **{"g" + k: _ptr(v) for k, v in grads.items()})
        return (grads["u"], grads["dt"], grads["dt_bias"], grads["A"], grads["B"], grads["C"], grads["D"], grads["z"],
                None, None)


def _ssd_call(x, dt, dt_bias, A, B, C, D, offsets, heads, groups, dt_min, dt_max, boundaries, backward=False, **extra):
    T, E = x.shape
    device, stream = _launch_context(x)
    native = _native()
    entry = native.cuda_train_ssd_scan_backward if backward else native.cuda_train_ssd_scan
    entry(device, stream, offsets.numel() - 1, _ptr(offsets), T, heads, E // heads, groups, B.shape[1] // groups,
          _ptr(x), _row_stride(x), _ptr(dt), _row_stride(dt), _ptr(dt_bias), _ptr(A), dt_min, dt_max, _ptr(B), _ptr(C),
          _row_stride(B), _ptr(D), _ptr(boundaries), **extra)


def _check_ssd_shapes(x, dt, dt_bias, A, B, C, D, heads, groups):
    """What the kernels read past if it were wrong (the CPU binding checks the same)."""
    T, E = x.shape
    if heads < 1 or groups < 1 or E % heads or heads % groups:
        raise ValueError("heads must divide x's width and groups must divide heads")
    if B.shape != C.shape or B.shape[0] != T or B.shape[1] % groups or B.shape[1] == 0:
        raise ValueError("B and C must both be [T, groups * N]")
    if tuple(dt.shape) != (T, heads) or any(t is not None and tuple(t.shape) != (heads,) for t in (dt_bias, A, D)):
        raise ValueError("dt must be [T, heads] and dt_bias, A, D [heads]")


class CudaSsdScanFunction(torch.autograd.Function):
    """Mamba-2's scan (functional.ssd_scan) with the CUDA kernels: the forward keeps the state
    entering every chunk of SCAN_CHUNK tokens after a sequence's first ([count, heads, N, P]),
    and the backward recomputes the states inside a chunk from them."""

    @staticmethod
    def forward(ctx, x, dt, dt_bias, A, B, C, D, offsets, heads, groups, dt_min, dt_max):
        x, dt, dt_bias, D = _rows(x), _rows(dt), _rows(dt_bias), _rows(D)
        A = A.detach().contiguous()
        B, C = _bc_pair(B, C)
        _check_ssd_shapes(x, dt, dt_bias, A, B, C, D, heads, groups)
        T, E = x.shape
        N = B.shape[1] // groups
        count = _native().train_scan_boundary_count(offsets.numpy(), SCAN_CHUNK)
        boundaries = torch.empty(max(count, 1) * E * N, dtype=torch.float32, device=x.device)
        y = torch.empty((T, E), dtype=torch.float32, device=x.device)
        _ssd_call(x, dt, dt_bias, A, B, C, D, offsets, heads, groups, dt_min, dt_max, boundaries, y=_ptr(y))
        ctx.save_for_backward(x, dt, dt_bias, A, B, C, D, boundaries)
        ctx.offsets = offsets
        ctx.shape = (heads, groups, dt_min, dt_max)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, dt, dt_bias, A, B, C, D, boundaries = ctx.saved_tensors
        heads, groups, dt_min, dt_max = ctx.shape
        grad_y = _rows(grad_y)

        def empty(*shape):
            return torch.empty(shape, dtype=torch.float32, device=x.device)

        T, E = x.shape
        grads = dict(x=empty(T, E), dt=empty(T, heads), dt_bias=None if dt_bias is None else empty(heads),
                     A=empty(heads), B=empty(*B.shape), C=empty(*C.shape), D=None if D is None else empty(heads))
        _ssd_call(x, dt, dt_bias, A, B, C, D, ctx.offsets, heads, groups, dt_min, dt_max, boundaries, backward=True,
                  gy=_ptr(grad_y), ldgy=_row_stride(grad_y), **{"g" + k: _ptr(v) for k, v in grads.items()})
        return (grads["x"], grads["dt"], grads["dt_bias"], grads["A"], grads["B"], grads["C"], grads["D"], None, None,
                None, None, None)
