"""/search: queries embedded as encode_query embeds them, searched in a loaded index, optionally
fused with BM25 over the corpus the index was built from."""
from __future__ import annotations

import asyncio
from typing import Optional

import numpy as np

from .embedding import EmbeddingService
from .errors import ApiError

# fusion looks deeper than k in each ranking: a document low in one can rise with the other
FUSION_DEPTH = 100


class SearchService:
    def __init__(self, embedding: EmbeddingService, index, bm25=None, fusion: str = "rrf"):
        if index.dim != embedding.dim:
            raise ValueError(f"the index holds {index.dim}-d vectors but the model gives {embedding.dim}-d embeddings")
        self.embedding = embedding
        self.index = index
        self.bm25 = bm25
        self.fusion = fusion

    async def search(self, queries: list[str], k: int, hybrid: Optional[bool]) -> list[list[dict]]:
        """Per query, up to k {"id", "score"} best first."""
        if hybrid and self.bm25 is None:
            raise ApiError(422, "hybrid search needs the corpus: start the server with --hybrid CORPUS",
                           code="hybrid_not_available", param="hybrid")
        use_bm25 = self.bm25 is not None and hybrid is not False
        prefix = self.embedding.prompt_prefix(None, role="query")
        ids = await self.embedding.tokenize(queries, prefix)
        vectors = await self.embedding.embed(ids, normalize=True)
        depth = max(k, FUSION_DEPTH) if use_bm25 else k
        depth = min(depth, max(self.index.ntotal, 1))
        scores, found = await asyncio.to_thread(self.index.search, vectors, depth)
        dense = [_ranking(row_scores, row_ids) for row_scores, row_ids in zip(scores, found)]
        if not use_bm25:
            return [[{"id": d, "score": s} for d, s in ranking[:k]] for ranking in dense]
        return await asyncio.to_thread(self._fuse, queries, dense, k, depth)

    def _fuse(self, queries: list[str], dense: list[list[tuple]], k: int, depth: int) -> list[list[dict]]:
        from ...evaluation.datasets import ranked
        from ...evaluation.fusion import fuse

        keys = [str(i) for i in range(len(queries))]
        dense_run = {key: {str(d): s for d, s in ranking} for key, ranking in zip(keys, dense)}
        bm25_run = self.bm25.search(dict(zip(keys, queries)), k=depth)
        fused = fuse([dense_run, bm25_run], method=self.fusion, top_k=k)
        return [[{"id": d, "score": s} for d, s in ranked(fused.get(key, {}))] for key in keys]


def _ranking(scores: np.ndarray, ids) -> list[tuple]:
    out = []
    for score, doc in zip(scores, ids):
        if doc is None or doc == -1 or not np.isfinite(score):
            continue
        out.append((doc.item() if isinstance(doc, np.generic) else doc, float(score)))
    return out
