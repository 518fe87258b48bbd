"""LlamaIndex embeddings over a MambaEncoder (needs llama-index-core).

    from mambaret.integrations.llamaindex import MambaLlamaIndexEmbedding
    from llama_index.core import Settings
    Settings.embed_model = MambaLlamaIndexEmbedding("path/to/model")

Queries go through encode_query, texts (nodes) through encode_document, so a model's query
and document prompts apply.
"""
from __future__ import annotations

import asyncio
import functools
import os
from typing import Any

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
except ImportError as exc:
    raise ImportError("MambaLlamaIndexEmbedding needs llama-index-core: pip install '.[llamaindex]' in the "
                      "mambaret repository "
                      f"(importing it failed: {exc})") from None

from ._common import check_texts, load_encoder


class MambaLlamaIndexEmbedding(BaseEmbedding):
    """A LlamaIndex BaseEmbedding backed by a MambaEncoder.

    model: a MambaEncoder, or a path (or hub id) loaded with model_kwargs. normalize:
    L2-normalise the vectors (LlamaIndex ranks by cosine by default; on, as the model is
    trained for it). Other keyword arguments are BaseEmbedding's (embed_batch_size,
    callback_manager, ...).
    """

    normalize: bool = Field(default=True, description="L2-normalise the embeddings.")
    _encoder: Any = PrivateAttr()

    def __init__(self, model, *, normalize: bool = True, model_kwargs: dict[str, Any] | None = None, **kwargs: Any):
        encoder = load_encoder(model, model_kwargs)
        kwargs.setdefault("model_name", os.path.basename(os.path.normpath(encoder.model_dir or "mambaret")))
        super().__init__(normalize=normalize, **kwargs)
        self._encoder = encoder

    @classmethod
    def class_name(cls) -> str:
        return "MambaLlamaIndexEmbedding"

    @property
    def encoder(self):
        return self._encoder

    def _get_query_embedding(self, query: str) -> list[float]:
        if not isinstance(query, str):
            raise TypeError(f"a query must be a str, got {type(query).__name__}")
        return self._encoder.encode_query(query, normalize_embeddings=self.normalize).tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embeddings([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        texts = check_texts(texts)
        if not texts:
            return []
        return self._encoder.encode_document(texts, batch_size=self.embed_batch_size,
                                             normalize_embeddings=self.normalize).tolist()

    # The core releases the GIL while it computes, so a worker thread keeps the event loop free.
    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await self._run(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await self._run(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await self._run(self._get_text_embeddings, texts)
