"""PyTorch modules for training Mamba-1 retrievers (needs torch: `pip install ".[train]"` in the repository).

`MambaModel` has the parameter names of transformers' `MambaModel`, so state dicts move both ways;
its mixer runs the causal conv + SiLU and the selective scan as autograd Functions over the C
kernels (forward and backward), on packed batches (1-D tokens + sequence offsets, no padding).
"""
try:
    import torch  # noqa: F401
except ImportError as exc:  # torch is the "train" extra, never a core dependency
    raise ImportError('mambaret.nn needs torch: pip install torch==2.13.0 '
                      '(or pip install ".[train]" in the mambaret repository)') from exc

from .functional import conv_silu, selective_scan
from .model import MambaModel, last_token_embeddings, offsets_from_lengths

__all__ = ["MambaModel", "conv_silu", "last_token_embeddings", "offsets_from_lengths", "selective_scan"]
