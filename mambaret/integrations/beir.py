"""BEIR's dense-model interface over a MambaEncoder.

    from beir.retrieval.search.dense import DenseRetrievalExactSearch
    model = DenseRetrievalExactSearch(BeirEncoder(encoder), batch_size=64)

encode_queries embeds with the query prompt, encode_corpus with the document prompt; a
document is its title and text joined by a space, as BEIR's own models build it.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ._common import check_encode_kwargs, load_encoder


def corpus_texts(corpus, sep: str = " ") -> list[str]:
    """Document strings from BEIR's corpus shapes: a list of {"title", "text"} dicts, a dict of
    such dicts keyed by doc id (in its order), or columns {"title": [...], "text": [...]}."""
    if isinstance(corpus, Mapping):
        if "text" in corpus and isinstance(corpus["text"], (list, tuple)):
            texts = list(corpus["text"])
            titles = list(corpus.get("title") or [""] * len(texts))
            if len(titles) != len(texts):
                raise ValueError(f"corpus columns differ in length: {len(titles)} titles, {len(texts)} texts")
            return [_join(title, text, sep, i) for i, (title, text) in enumerate(zip(titles, texts))]
        corpus = list(corpus.values())
    if isinstance(corpus, (str, bytes)) or not isinstance(corpus, Sequence):
        raise TypeError(f"corpus must be a list of documents (dicts with 'title' and 'text'), got {type(corpus).__name__}")
    out = []
    for i, doc in enumerate(corpus):
        if not isinstance(doc, Mapping):
            raise TypeError(f"corpus item {i} must be a dict with 'title' and 'text', got {type(doc).__name__}")
        if "text" not in doc:
            raise ValueError(f"corpus item {i} has no 'text'")
        out.append(_join(doc.get("title"), doc["text"], sep, i))
    return out


def _join(title, text, sep: str, i: int) -> str:
    if not isinstance(text, str) or not (title is None or isinstance(title, str)):
        raise TypeError(f"corpus item {i}: 'title' and 'text' must be str")
    return (title + sep + text).strip() if title else text.strip()


class BeirEncoder:
    """encode_queries / encode_corpus as BEIR's DenseRetrievalExactSearch calls them.

    model: a MambaEncoder, or a path (or hub id) loaded with model_kwargs. encode_kwargs are
    defaults for every call (e.g. normalize_embeddings=True for "dot"
    scoring); per-call keyword arguments (BEIR passes show_progress_bar, convert_to_tensor)
    go to MambaEncoder.encode, and unknown ones raise TypeError.
    """

    def __init__(self, model, *, sep: str = " ", model_kwargs: dict[str, Any] | None = None, **encode_kwargs: Any):
        self.encoder = load_encoder(model, model_kwargs)
        self.sep = sep
        self.encode_kwargs = check_encode_kwargs(self.encoder, encode_kwargs, "BeirEncoder")

    def encode_queries(self, queries: list[str], batch_size: int = 32, **kwargs: Any):
        if isinstance(queries, str):
            raise TypeError("encode_queries takes a list of queries")
        return self.encoder.encode_query(list(queries), batch_size=batch_size, **{**self.encode_kwargs, **kwargs})

    def encode_corpus(self, corpus, batch_size: int = 8, **kwargs: Any):
        texts = corpus_texts(corpus, self.sep)
        return self.encoder.encode_document(texts, batch_size=batch_size, **{**self.encode_kwargs, **kwargs})
