"""mambaret: dense retrieval with Mamba state-space encoders.

    import mambaret as mr
    enc = mr.MambaEncoder.from_pretrained("default")   # the packaged model, mr.DEFAULT_MODEL; or a folder
    emb = enc.encode(["a passage", "another"], normalize_embeddings=True)
"""
from ._native import configure_blas, default_threads, show_config
from .arch.config import parse_config, read_config
from .encoding.cuda import cuda_available
from .encoding.encoder import MambaEncoder
from .encoding.tokenization import PackedBatch
from .evaluation.fusion import fuse
from .evaluation.metrics import evaluate, evaluate_by_group
from .models import DEFAULT_MODEL
from .search.build import build_index
from .search.codes import BinaryFlatIndex, Int8FlatIndex
from .search.index import FlatIndex
from .search.quantization import quantize_embeddings
from .search.similarity import semantic_search, similarity

__version__ = "0.2.0"

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

# Modules that moved into subpackages and that `import mambaret` loaded before: their old names
# stay attributes (mambaret.datasets.load_beir, mambaret.quantization.calibrate_ranges).
_MOVED_MODULES = ("datasets", "quantization")


def __getattr__(name: str):
    if name in _MOVED_MODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
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
