"""autograd Functions over the C training kernels (mambaret._C.train_*).

Tensors reach C as NumPy views (no copy); outputs and gradients are allocated here by torch.
Threads: torch.get_num_threads(), the team torch's own GEMMs use.
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
