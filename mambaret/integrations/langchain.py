"""LangChain embeddings over a MambaEncoder.

    from mambaret.integrations.langchain import MambaEmbeddings
    embeddings = MambaEmbeddings("path/to/model")
    vectors = embeddings.embed_documents(["a passage", "another"])
    query = embeddings.embed_query("a question")

When langchain-core is installed the class is a `langchain_core.embeddings.Embeddings`, so
vector stores and retrievers accept it; without it the same class works on its own.
"""
from __future__ import annotations

import asyncio
import functools
from typing import Any

from ._common import check_encode_kwargs, check_texts, load_encoder

try:
    from langchain_core.embeddings import Embeddings as _EmbeddingsBase
except ImportError:  # langchain-core is optional: the class stands alone
    _EmbeddingsBase = object

LANGCHAIN_AVAILABLE = _EmbeddingsBase is not object


class MambaEmbeddings(_EmbeddingsBase):
    """LangChain's embeddings interface: embed_documents / embed_query and their async forms.

    model: a MambaEncoder, or a path (or hub id) loaded with model_kwargs.
    normalize: L2-normalise the vectors (on by default: the model is trained for cosine, and
    vector stores that rank by L2 distance then rank by cosine too).
    encode_kwargs / query_encode_kwargs: arguments for encode_document / encode_query (e.g.
    batch_size, prompt_name); query_encode_kwargs defaults to encode_kwargs. Keyword arguments
    given to the embed methods are passed on the same way; unknown names raise TypeError.
    """

    def __init__(self, model, *, normalize: bool = True, model_kwargs: dict[str, Any] | None = None,
                 encode_kwargs: dict[str, Any] | None = None, query_encode_kwargs: dict[str, Any] | None = None):
        self.encoder = load_encoder(model, model_kwargs)
        self.normalize = bool(normalize)
        self.encode_kwargs = check_encode_kwargs(self.encoder, encode_kwargs, "encode_kwargs")
        self.query_encode_kwargs = (check_encode_kwargs(self.encoder, query_encode_kwargs, "query_encode_kwargs")
                                    if query_encode_kwargs is not None else dict(self.encode_kwargs))

    def __repr__(self) -> str:
        return f"MambaEmbeddings({self.encoder!r}, normalize={self.normalize})"

    def _call_kwargs(self, defaults: dict, kwargs: dict) -> dict:
        merged = {"normalize_embeddings": self.normalize, **defaults, **kwargs}
        # these would change the return type away from a NumPy array
        for name in ("convert_to_tensor", "convert_to", "output_value"):
            if name in merged:
                raise TypeError(f"{name} cannot be set here: LangChain expects lists of floats")
        return merged

    def embed_documents(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        if isinstance(texts, str):
            raise TypeError("embed_documents takes a list of texts; use embed_query for a single text")
        texts = check_texts(texts)
        if not texts:
            return []
        vectors = self.encoder.encode_document(texts, **self._call_kwargs(self.encode_kwargs, kwargs))
        return vectors.tolist()

    def embed_query(self, text: str, **kwargs: Any) -> list[float]:
        if not isinstance(text, str):
            raise TypeError(f"embed_query takes one str, got {type(text).__name__}")
        vector = self.encoder.encode_query(text, **self._call_kwargs(self.query_encode_kwargs, kwargs))
        return vector.tolist()

    # The core releases the GIL while it computes, so a worker thread keeps the event loop free.
    async def aembed_documents(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(self.embed_documents, texts, **kwargs))

    async def aembed_query(self, text: str, **kwargs: Any) -> list[float]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(self.embed_query, text, **kwargs))
