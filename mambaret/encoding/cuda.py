"""Whether the optional CUDA module can run here. `import mambaret` never needs CUDA."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def _load_cuda_module():
    try:
        from .. import _cuda  # built only when nvcc was found at install time
    except ImportError as exc:
        return None, f"mambaret was built without CUDA or its libraries are missing ({exc})"
    try:
        count = _cuda.device_count()
    except RuntimeError as exc:
        return None, str(exc)
    if count < 1:
        return None, "no CUDA device is visible"
    return _cuda, ""


def cuda_available() -> bool:
    """True when the CUDA module is built, its libraries load and a GPU is visible."""
    return _load_cuda_module()[0] is not None


def require_cuda():
    """The CUDA module, or a RuntimeError saying why it cannot be used."""
    module, why = _load_cuda_module()
    if module is None:
        raise RuntimeError(f"device='cuda' was asked for but CUDA is not usable: {why}")
    return module
