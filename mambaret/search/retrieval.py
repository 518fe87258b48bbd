"""End-to-end dense retrieval over a collection: encode, index, search, turn into a run."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Mapping

import numpy as np

from .index import FlatIndex

Run = Dict[str, Dict[str, float]]


@dataclass
class Collection:
    """Documents, queries and judgements of a test collection, as plain dicts."""

    docs: Dict[str, str]
    queries: Dict[str, str]
    qrels: Dict[str, Dict[str, int]]
    name: str = ""


def load_collection(folder: str) -> Collection:
    """A TREC folder (doc-text.trec, query-text.trec, qrels, as Vaswani's) or a BEIR folder
    (corpus.jsonl, queries.jsonl, qrels/test.tsv)."""
    from ..evaluation import datasets

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no collection folder {folder!r}")
    if os.path.isfile(os.path.join(folder, "corpus.jsonl")):
        corpus, queries, qrels = datasets.load_beir(folder)
        docs = {d: datasets.document_text(v) for d, v in corpus.items()}
        return Collection(docs, queries, qrels, os.path.basename(os.path.normpath(folder)))
    paths = {name: os.path.join(folder, name) for name in ("doc-text.trec", "query-text.trec", "qrels")}
    missing = [name for name, path in paths.items() if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"{folder!r} is neither a BEIR folder (corpus.jsonl) nor a TREC folder: "
                                f"missing {', '.join(missing)}")
    return Collection(datasets.load_trec_docs(paths["doc-text.trec"]),
                      datasets.load_trec_topics(paths["query-text.trec"]),
                      datasets.load_qrels(paths["qrels"]), os.path.basename(os.path.normpath(folder)))


def build_index(encoder, docs: Mapping[str, str], batch_size: int = 64,
                show_progress_bar: bool | None = None) -> FlatIndex:
    """Encodes documents (normalised) into a FlatIndex keyed by their ids."""
    ids = list(docs)
    vectors = encoder.encode_document([docs[i] for i in ids], batch_size=batch_size,
                                      show_progress_bar=show_progress_bar, normalize_embeddings=True)
    index = FlatIndex(encoder.get_sentence_embedding_dimension(), threads=encoder.threads)
    index.add(vectors, ids=ids)
    return index


def search_run(encoder, index: FlatIndex, queries: Mapping[str, str], k: int = 100, batch_size: int = 64,
               show_progress_bar: bool = False) -> Run:
    """Encodes queries (normalised), searches the index, and returns {qid: {docid: score}}."""
    qids = list(queries)
    if not qids:
        return {}
    vectors = encoder.encode_query([queries[q] for q in qids], batch_size=batch_size,
                                   show_progress_bar=show_progress_bar, normalize_embeddings=True)
    scores, ids = index.search(vectors, k=k)
    run: Run = {}
    for qid, row_scores, row_ids in zip(qids, scores, ids):
        run[qid] = {str(d): float(s) for s, d in zip(row_scores, row_ids) if d is not None and d != -1
                    and np.isfinite(s)}
    return run
