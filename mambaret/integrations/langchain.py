"""LangChain embeddings over a MambaEncoder.

    from mambaret.integrations.langchain import MambaEmbeddings
    embeddings = MambaEmbeddings("path/to/model")
    vectors = embeddings.embed_documents(["a passage", "another"])
    query = embeddings.embed_query("a question")

When langchain-core is installed the class is a `langchain_core.embeddings.Embeddings`, so
vector stores and retrievers accept it; without it the same class works on its own.

MambaHybridRetriever (needs langchain-core and bm25s) is dense + BM25 retrieval, fused, in one call:

    retriever = MambaHybridRetriever.from_texts(texts, "path/to/model", k=4, method="rrf")
    documents = retriever.invoke("a question")
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

    model: a MambaEncoder, or a path (or hub id) loaded with model_kwargs; default "default",
    the packaged default model (as every command of the command line).
    normalize: L2-normalise the vectors (on by default: the model is trained for cosine, and
    vector stores that rank by L2 distance then rank by cosine too).
    encode_kwargs / query_encode_kwargs: arguments for encode_document / encode_query (e.g.
    batch_size, prompt_name); query_encode_kwargs defaults to encode_kwargs. Keyword arguments
    given to the embed methods are passed on the same way; unknown names raise TypeError.
    """

    def __init__(self, model="default", *, normalize: bool = True, model_kwargs: dict[str, Any] | None = None,
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


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class _Summary(str):
    """A string that a repr shows without quotes."""

    def __repr__(self) -> str:
        return str(self)


def _hybrid_run(encoder, index, bm25, query: str, method: str, weights, k: int, depth: int) -> dict:
    """The fused run of one query: the dense ranking and BM25's, each ``depth`` deep, cut to k."""
    from ..evaluation.fusion import fuse

    vector = encoder.encode_query([query], normalize_embeddings=True, show_progress_bar=False)
    scores, ids = index.search(vector, k=min(depth, index.ntotal))
    dense = {str(d): float(s) for s, d in zip(scores[0], ids[0]) if d is not None}
    sparse = bm25.search({"q": query}, k=depth)["q"]
    return fuse([{"q": dense}, {"q": sparse}], method=method, weights=weights, top_k=k)["q"]


if LANGCHAIN_AVAILABLE:
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    class MambaHybridRetriever(BaseRetriever):
        """Dense (mambaret) + BM25 retrieval over the same documents, fused (``mambaret.fuse``).

            retriever = MambaHybridRetriever.from_texts(texts, "path/to/model", k=4)
            docs = retriever.invoke("a question")    # Documents, metadata["score"] the fused score

        method: ``"rrf"`` or ``"zscore"``; weights: (dense, BM25), default equal; depth: how deep
        each ranking is read before fusing. BM25 uses bm25s (part of the base install).
        """

        encoder: Any
        index: Any
        bm25: Any
        documents: list
        k: int = 4
        method: str = "rrf"
        weights: Any = None
        depth: int = 100

        @classmethod
        def from_documents(cls, documents, model, *, k: int = 4, method: str = "rrf", weights=None,
                           depth: int = 100, model_kwargs: dict[str, Any] | None = None,
                           bm25_kwargs: dict[str, Any] | None = None, batch_size: int = 32,
                           **kwargs: Any) -> "MambaHybridRetriever":
            """Encodes and BM25-indexes ``documents`` (LangChain Documents) in one call."""
            from ..evaluation.bm25 import BM25
            from ..search.index import FlatIndex

            from ..evaluation.bm25 import require_bm25s

            documents = list(documents)
            if not documents:
                raise ValueError("no documents to index")
            if method not in ("rrf", "zscore"):
                raise ValueError(f"unknown fusion method {method!r}; use 'rrf' or 'zscore'")
            _check_count("k", k)
            _check_count("depth", depth)
            require_bm25s()  # before the encoding, which is the long part
            encoder = load_encoder(model, model_kwargs)
            texts = check_texts(d.page_content for d in documents)
            keys = [str(i) for i in range(len(documents))]
            vectors = encoder.encode_document(texts, batch_size=batch_size, normalize_embeddings=True,
                                              show_progress_bar=False)
            index = FlatIndex(vectors.shape[1], threads=encoder.threads)
            index.add(vectors, ids=keys)
            bm25 = BM25(dict(zip(keys, texts)), **(bm25_kwargs or {}))
            return cls(encoder=encoder, index=index, bm25=bm25, documents=documents, k=k, method=method,
                       weights=weights, depth=depth, **kwargs)

        @classmethod
        def from_texts(cls, texts, model, metadatas=None, ids=None, **kwargs: Any) -> "MambaHybridRetriever":
            """As from_documents, from plain texts (with optional metadatas and ids)."""
            texts = check_texts(texts)
            metadatas = list(metadatas) if metadatas is not None else [{} for _ in texts]
            ids = list(ids) if ids is not None else [None] * len(texts)
            if len(metadatas) != len(texts) or len(ids) != len(texts):
                raise ValueError("texts, metadatas and ids must be as long as each other")
            documents = [Document(page_content=t, metadata=dict(m), id=i) for t, m, i in zip(texts, metadatas, ids)]
            return cls.from_documents(documents, model, **kwargs)

        def __repr_args__(self):
            # the documents and the index would print in full: thousands of texts in a notebook
            yield "documents", _Summary(f"<{len(self.documents)} documents>")
            yield "encoder", self.encoder
            for name in ("k", "method", "weights", "depth"):
                yield name, getattr(self, name)

        def _get_relevant_documents(self, query: str, *, run_manager=None) -> list:
            if not isinstance(query, str):
                raise TypeError(f"the query must be a str, got {type(query).__name__}")
            _check_count("k", self.k)
            _check_count("depth", self.depth)
            fused = _hybrid_run(self.encoder, self.index, self.bm25, query, self.method, self.weights, self.k,
                                max(self.depth, self.k))
            found = []
            for key, score in sorted(fused.items(), key=lambda item: -item[1]):
                source = self.documents[int(key)]
                found.append(Document(page_content=source.page_content, id=source.id,
                                      metadata={**source.metadata, "score": score}))
            return found
else:
    class MambaHybridRetriever:  # the retriever returns LangChain Documents: it needs langchain-core
        """Needs langchain-core: ``pip install langchain-core`` (or ``'.[langchain]'`` in the repository)."""

        def __init__(self, *args, **kwargs):
            raise ImportError("MambaHybridRetriever needs langchain-core: pip install langchain-core "
                              "(or pip install '.[langchain]' in the mambaret repository)")

        @classmethod
        def from_texts(cls, *args, **kwargs):
            return cls()

        from_documents = from_texts
