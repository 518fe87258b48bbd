"""The GPU side of MambaEncoder: uploading a loaded model and encoding into GPU memory.

`MambaEncoder.from_pretrained(..., device="cuda", dtype="bfloat16")` builds the C model on the
host as for the CPU, then `_C.CudaModel` uploads its weights once. A CudaModel's forward() takes
the same arguments as the CPU Model's, so NumPy results need nothing else; results that stay on
the GPU (convert_to="dlpack" or torch) are assembled here, in input order, in one device tensor.
"""
from __future__ import annotations

import sys

from .. import _C
from .cuda import require_cuda
from .tokenization import check_poolable, token_budget_batches

DTYPES = ("bfloat16", "float16", "float32")


def parse_device(device) -> int:
    """'cuda' -> 0, 'cuda:N' -> N (a torch.device is accepted too)."""
    text = str(device)
    if text == "cuda":
        return 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def upload(model: _C.Model, device, dtype: str) -> _C.CudaModel:
    """The GPU copy of a finished host model, computing in `dtype`."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    index = parse_device(device)
    cuda = require_cuda()
    count = cuda.device_count()
    if index >= count:
        raise ValueError(f"device cuda:{index} does not exist ({count} visible)")
    return _C.CudaModel(model, dtype=dtype, device=index)


def current_stream(device_index: int):
    """torch's current stream on the device as a cudaStream_t int when torch is in use, so our
    kernels queue behind the caller's work; None (the default stream) otherwise."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.current_stream(device_index).cuda_stream


def encode_on_device(encoder, ids: list[list[int]], batch_size: int, normalize: bool, single: bool, as_torch: bool,
                     exit_layer: int | None = None, truncate_dim: int | None = None):
    """Pooled embeddings [n, d] (or [d] for a single input) left in GPU memory; exit_layer and
    truncate_dim as MambaEncoder.encode takes them (truncation needs torch: as_torch)."""
    if truncate_dim is not None and not as_torch:
        raise ValueError("truncate_dim on the GPU needs convert_to='torch' (or convert_to_tensor=True): "
                         "a CudaTensor is not sliced here")
    check_poolable(ids)
    model = encoder.model
    stream = current_stream(model.device)
    out = model.empty(len(ids))
    extra = {} if exit_layer is None else {"exit_layer": exit_layer}
    for start, _, batch in token_budget_batches(ids, batch_size, encoder.max_tokens):
        model.forward(batch.tokens, batch.offsets, pooling=encoder.pooling, max_tokens=encoder.max_tokens,
                      normalize=normalize and truncate_dim is None, convert_to="dlpack", stream=stream, out=out,
                      out_row=start, **extra)
    if not as_torch:
        return out.row(0) if single else out  # [d] for a single input, as on the CPU
    import torch

    result = torch.from_dlpack(out)  # zero-copy; torch's current stream waits for ours
    if truncate_dim is not None:  # truncate, then normalise what is kept
        result = result[:, :truncate_dim]
        if normalize:
            result = torch.nn.functional.normalize(result, dim=-1, eps=1e-12)
    return result[0] if single else result
