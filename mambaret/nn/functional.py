"""The mixer's sequence ops on packed batches, differentiable.

Tensors are token-major: row t of a [T, E] tensor is token t of the packed batch, and `offsets`
([S + 1] int64, offsets[0] = 0, offsets[S] = T) marks where each sequence starts, so the conv
window and the scan state restart there.

  conv_silu(x, weight [E, K], bias [E] | None, offsets)
      out[t] = silu(bias + sum_k weight[:, k] * x[t - (K-1) + k]), inputs before a sequence's
      start read as zero
  selective_scan(u, dt, dt_bias [E] | None, A [E, N], B [T, N], C [T, N], D [E] | None,
                 z [T, E] | None, offsets)
      delta = softplus(dt + dt_bias); h = exp(delta A) h + delta B u; y = (C.h + D u) silu(z)
  ssd_scan(x [T, H*P], dt [T, H], dt_bias [H] | None, A [H], B [T, G*N], C [T, G*N], D [H] | None,
           offsets, heads, groups, dt_limit)
      Mamba-2's scan per head, delta clamped to dt_limit; B and C shared by a group's heads

float32 CPU tensors run the C kernels (forward and backward); GPU tensors run the CUDA kernels
when mambaret._cuda is built and sees the GPU (float32 math: half inputs, as under autocast, are
widened, and their gradients narrowed back by autograd); anything else (float64, a GPU without
the CUDA kernels) runs the plain torch reference below, which also defines the math the kernels
are tested against.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sequence_ids(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """Each token's sequence ([T] int64). (searchsorted: repeat_interleave is far slower on CPU.)"""
    return torch.searchsorted(offsets[1:].to(torch.int64), torch.arange(total, device=offsets.device), right=True)


def sequence_positions(offsets: torch.Tensor, total: int) -> torch.Tensor:
    """Each token's position within its sequence ([T] int64)."""
    offsets = offsets.to(torch.int64)
    return torch.arange(total, device=offsets.device) - offsets[sequence_ids(offsets, total)]


def check_offsets(offsets: torch.Tensor, total: int) -> torch.Tensor:
    if offsets.dim() != 1 or offsets.numel() < 2:
        raise ValueError("offsets must be a 1-D tensor [S + 1] with at least one sequence")
    if offsets.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"offsets must hold integers, got {offsets.dtype}")
    offsets = offsets.to(device="cpu", dtype=torch.int64).contiguous()
    if int(offsets[0]) != 0 or int(offsets[-1]) != total:
        raise ValueError(f"offsets must run from 0 to the token count {total}, got {int(offsets[0])}..{int(offsets[-1])}")
    if bool((offsets[1:] < offsets[:-1]).any()):
        raise ValueError("offsets must not decrease")
    return offsets


# ------------------------------------------------------------------------------------------
# torch references (any dtype, any device; autograd differentiates them)

def conv_silu_reference(x, weight, bias, offsets):
    T, E = x.shape
    K = weight.shape[1]
    pos = sequence_positions(offsets.to(x.device), T)
    acc = x * weight[:, K - 1]
    for shift in range(1, K):
        shifted = torch.zeros_like(x)
        if shift < T:
            shifted[shift:] = x[:-shift]
        visible = (pos >= shift).to(x.dtype).unsqueeze(1)
        acc = acc + shifted * visible * weight[:, K - 1 - shift]
    if bias is not None:
        acc = acc + bias
    return F.silu(acc)


def selective_scan_reference(u, dt, dt_bias, A, B, C, D, z, offsets):
    T, E = u.shape
    N = A.shape[1]
    offsets = offsets.to(u.device, torch.int64)
    lengths = offsets[1:] - offsets[:-1]
    S = lengths.numel()
    longest = int(lengths.max()) if S else 0
    seq = sequence_ids(offsets, T)
    pos = sequence_positions(offsets, T)

    def padded(rows):  # [T, n] -> [S, longest, n]
        out = rows.new_zeros((S, longest, rows.shape[1]))
        return out.index_put((seq, pos), rows)

    delta = F.softplus(dt + dt_bias if dt_bias is not None else dt)
    d_pad, u_pad, b_pad, c_pad = padded(delta), padded(u), padded(B), padded(C)
    h = u.new_zeros((S, E, N))
    ys = []
    for t in range(longest):
        d_t = d_pad[:, t].unsqueeze(-1)  # [S, E, 1]
        h = torch.exp(d_t * A) * h + d_t * b_pad[:, t].unsqueeze(1) * u_pad[:, t].unsqueeze(-1)
        ys.append((h * c_pad[:, t].unsqueeze(1)).sum(-1))
    y = torch.stack(ys, 1)[seq, pos] if longest else u.new_zeros((0, E))
    if D is not None:
        y = y + u * D
    if z is not None:
        y = y * F.silu(z)
    return y


def ssd_scan_reference(x, dt, dt_bias, A, B, C, D, offsets, heads, groups, dt_limit=(0.0, float("inf"))):
    """Mamba-2's scan, token by token (the math the C kernels are tested against):
    delta = clamp(softplus(dt + dt_bias), *dt_limit) per head; h = exp(delta A) h + delta B x;
    y = C.h + D x, B and C shared by the heads of a group."""
    T, E = x.shape
    H, G = heads, groups
    P, N = E // H, B.shape[1] // G
    offsets = offsets.to(x.device, torch.int64)
    lengths = offsets[1:] - offsets[:-1]
    S = lengths.numel()
    longest = int(lengths.max()) if S else 0
    seq, pos = sequence_ids(offsets, T), sequence_positions(offsets, T)

    def padded(rows):  # [T, n] -> [S, longest, n]
        return rows.new_zeros((S, longest, rows.shape[1])).index_put((seq, pos), rows)

    delta = torch.clamp(F.softplus(dt + dt_bias if dt_bias is not None else dt), dt_limit[0], dt_limit[1])
    d_pad, x_pad = padded(delta), padded(x).view(S, longest, H, P)
    per_head = H // G
    b_pad = padded(B).view(S, longest, G, 1, N).expand(S, longest, G, per_head, N).reshape(S, longest, H, N)
    c_pad = padded(C).view(S, longest, G, 1, N).expand(S, longest, G, per_head, N).reshape(S, longest, H, N)
    h = x.new_zeros((S, H, N, P))
    ys = []
    for t in range(longest):
        d_t = d_pad[:, t]  # [S, H]
        decay = torch.exp(d_t * A).view(S, H, 1, 1)
        h = decay * h + (d_t.view(S, H, 1, 1) * b_pad[:, t].unsqueeze(-1)) * x_pad[:, t].unsqueeze(2)
        ys.append((h * c_pad[:, t].unsqueeze(-1)).sum(2).reshape(S, E))
    y = torch.stack(ys, 1)[seq, pos] if longest else x.new_zeros((0, E))
    if D is not None:
        y = y + (x.view(T, H, P) * D.view(1, H, 1)).view(T, E)
    return y


# ------------------------------------------------------------------------------------------
# dispatch

def _use_kernels(*tensors) -> bool:
    from . import _kernels

    return _kernels.available() and all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32)
                                        for t in tensors)


_WIDENED = (torch.float32, torch.bfloat16, torch.float16)  # the CUDA kernels take these, as float32


def _use_cuda_kernels(*tensors) -> bool:
    from . import _kernels

    present = [t for t in tensors if t is not None]
    device = present[0].device
    return (device.type == "cuda" and all(t.device == device and t.dtype in _WIDENED for t in present)
            and _kernels.cuda_available())


def _cuda_positions(offsets: torch.Tensor, total: int, device) -> torch.Tensor:
    return sequence_positions(offsets, total).to(device=device, dtype=torch.int32)


def conv_silu(x, weight, bias, offsets):
    offsets = check_offsets(offsets, x.shape[0])
    if _use_kernels(x, weight, bias):
        from ._kernels import ConvSiluFunction

        return ConvSiluFunction.apply(x, weight, bias, offsets)
    if _use_cuda_kernels(x, weight, bias):
        from ._kernels import CudaConvSiluFunction

        widen = [None if t is None else t.float() for t in (x, weight, bias)]
        return CudaConvSiluFunction.apply(*widen, _cuda_positions(offsets, x.shape[0], x.device))
    return conv_silu_reference(x, weight, bias, offsets)


def selective_scan(u, dt, dt_bias, A, B, C, D, z, offsets):
    offsets = check_offsets(offsets, u.shape[0])
    if _use_kernels(u, dt, dt_bias, A, B, C, D, z):
        from ._kernels import SelectiveScanFunction

        return SelectiveScanFunction.apply(u, dt, dt_bias, A, B, C, D, z, offsets)
    if _use_cuda_kernels(u, dt, dt_bias, A, B, C, D, z):
        from ._kernels import CudaSelectiveScanFunction

        widen = [None if t is None else t.float() for t in (u, dt, dt_bias, A, B, C, D, z)]
        return CudaSelectiveScanFunction.apply(*widen, offsets, _cuda_positions(offsets, u.shape[0], u.device))
    return selective_scan_reference(u, dt, dt_bias, A, B, C, D, z, offsets)


def ssd_scan(x, dt, dt_bias, A, B, C, D, offsets, heads: int, groups: int, dt_limit=(0.0, float("inf"))):
    """Mamba-2's scan over a packed batch: x [T, heads * P], dt [T, heads], dt_bias, A, D [heads],
    B and C [T, groups * N]; see ssd_scan_reference."""
    offsets = check_offsets(offsets, x.shape[0])
    if _use_kernels(x, dt, dt_bias, A, B, C, D):
        from ._kernels import SsdScanFunction

        return SsdScanFunction.apply(x, dt, dt_bias, A, B, C, D, offsets, heads, groups, float(dt_limit[0]),
                                     float(dt_limit[1]))
    if _use_cuda_kernels(x, dt, dt_bias, A, B, C, D):
        from ._kernels import CudaSsdScanFunction

        widen = [None if t is None else t.float() for t in (x, dt, dt_bias, A, B, C, D)]
        return CudaSsdScanFunction.apply(*widen, offsets, heads, groups, float(dt_limit[0]), float(dt_limit[1]))
    return ssd_scan_reference(x, dt, dt_bias, A, B, C, D, offsets, heads, groups, dt_limit)
