"""mambaret: dense retrieval with Mamba state-space encoders.

    import mambaret as mr
    enc = mr.MambaEncoder.from_pretrained("path/to/mamba-130m-hf")
    emb = enc.encode(["a passage", "another"], normalize_embeddings=True)
"""
from ._native import configure_blas, default_threads, show_config
from .checkpoint import parse_config, read_config
from .cuda import cuda_available
from .encoder import MambaEncoder
from .evaluate import evaluate
from .index import FlatIndex
from .similarity import semantic_search, similarity
from .tokenization import PackedBatch

__version__ = "0.1.0"

__all__ = [
    "FlatIndex",
    "MambaEncoder",
    "PackedBatch",
    "configure_blas",
    "cuda_available",
    "default_threads",
    "evaluate",
    "parse_config",
    "read_config",
    "semantic_search",
    "show_config",
    "similarity",
    "__version__",
]
