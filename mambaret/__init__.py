"""mambaret: dense retrieval with Mamba state-space encoders.

    import mambaret as mr
    enc = mr.MambaEncoder.from_pretrained("default")   # the packaged model, mr.DEFAULT_MODEL; or a folder
    emb = enc.encode(["a passage", "another"], normalize_embeddings=True)
"""
from ._native import configure_blas, default_threads, show_config
from .build import build_index
from .checkpoint import parse_config, read_config
from .cuda import cuda_available
from .encoder import MambaEncoder
from .evaluate import evaluate, evaluate_by_group
from .fusion import fuse
from .index import FlatIndex
from .models import DEFAULT_MODEL
from .quantization import quantize_embeddings
from .quantized_index import BinaryFlatIndex, Int8FlatIndex
from .similarity import semantic_search, similarity
from .tokenization import PackedBatch

__version__ = "0.1.0"

# Adapters load on first use, so `import mambaret` never imports LangChain or LlamaIndex; they
# stay out of __all__ so that a star import does not either.
_INTEGRATIONS = {
    "MambaEmbeddings": ("langchain", "MambaEmbeddings"),
    "MambaHybridRetriever": ("langchain", "MambaHybridRetriever"),
    "MambaLlamaIndexEmbedding": ("llamaindex", "MambaLlamaIndexEmbedding"),
    "BeirEncoder": ("beir", "BeirEncoder"),
    "MtebEncoder": ("mteb", "MtebEncoder"),
    "export_sentence_transformers": ("sentence_transformers", "export"),
}


def __getattr__(name: str):
    if name == "nn":  # torch modules for training: imported (with torch) only when asked for
        import importlib

        return importlib.import_module(".nn", __name__)
    if name in _INTEGRATIONS:
        import importlib

        module, attribute = _INTEGRATIONS[name]
        value = getattr(importlib.import_module(f".integrations.{module}", __name__), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_INTEGRATIONS))


__all__ = [
    "BinaryFlatIndex",
    "DEFAULT_MODEL",
    "FlatIndex",
    "Int8FlatIndex",
    "MambaEncoder",
    "PackedBatch",
    "build_index",
    "configure_blas",
    "cuda_available",
    "default_threads",
    "evaluate",
    "evaluate_by_group",
    "fuse",
    "parse_config",
    "quantize_embeddings",
    "read_config",
    "semantic_search",
    "show_config",
    "similarity",
    "__version__",
]
