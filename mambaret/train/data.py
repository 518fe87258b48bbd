"""Training data: JSONL pairs or BEIR folders, as lists of examples, in a seeded order."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TrainExample:
    """One training line: a query, its positive and optional hard negatives (texts).

    scores: optional teacher scores for [positive, *negatives] (for KL distillation)."""

    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    scores: list[float] | None = None


def _bad(path: str, line_no: int, why: str) -> ValueError:
    return ValueError(f"{path}, line {line_no}: {why}")


def _parse_pair(path: str, line_no: int, line: str) -> TrainExample:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _bad(path, line_no, f"invalid JSON ({exc.msg})") from None
    if not isinstance(item, dict):
        raise _bad(path, line_no, "expected a JSON object with 'query' and 'positive'")
    query, positive = item.get("query"), item.get("positive")
    if not isinstance(query, str) or not query:
        raise _bad(path, line_no, "no 'query' string")
    if positive is None:
        raise _bad(path, line_no, "no 'positive'")
    if not isinstance(positive, str) or not positive:
        raise _bad(path, line_no, "'positive' must be a non-empty string")
    negatives = item.get("negatives", [])
    if negatives is None:
        negatives = []
    if not isinstance(negatives, list) or not all(isinstance(n, str) and n for n in negatives):
        raise _bad(path, line_no, "'negatives' must be a list of non-empty strings")
    scores = item.get("scores")
    if scores is not None:
        if (not isinstance(scores, list) or len(scores) != 1 + len(negatives)
                or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores)):
            raise _bad(path, line_no, "'scores' must be a list of numbers, one for the positive and one per negative")
        scores = [float(s) for s in scores]
    return TrainExample(query, positive, list(negatives), scores)


def load_jsonl_pairs(path: str) -> list[TrainExample]:
    """Reads `{"query": ..., "positive": ..., "negatives": [...]}` lines (negatives optional;
    "scores": [teacher score of the positive, then of each negative] optional). Blank lines
    are skipped; any other malformed line is a ValueError naming the file and line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no training file {path!r}")
    from ..evaluation.datasets import utf8_lines

    examples = []
    for line_no, line in utf8_lines(path):  # a file that is not UTF-8 is named with its line
        if line.strip():
            examples.append(_parse_pair(path, line_no, line))
    if not examples:
        raise ValueError(f"{path} holds no training pairs")
    return examples


def load_beir_pairs(folder: str, split: str = "train") -> tuple[list[TrainExample], dict[str, str]]:
    """(examples, corpus texts) from a BEIR folder: one example per judged (query, document)
    pair with relevance > 0 in qrels/<split>.tsv. The corpus is the pool for mining negatives."""
    from ..evaluation import datasets

    corpus, queries, qrels = datasets.load_beir(folder, split=split)
    texts = {doc_id: datasets.document_text(doc) for doc_id, doc in corpus.items()}
    examples = []
    for qid in sorted(qrels):
        if qid not in queries:
            continue
        for doc_id, rel in sorted(qrels[qid].items()):
            if rel > 0 and doc_id in texts and texts[doc_id]:
                examples.append(TrainExample(queries[qid], texts[doc_id]))
    if not examples:
        raise ValueError(f"{folder}: qrels/{split}.tsv has no relevant (query, document) pair in the corpus")
    return examples, texts


def load_training_data(path: str, split: str = "train") -> tuple[list[TrainExample], list[str] | None]:
    """A JSONL file or a BEIR folder; returns the examples and, for BEIR, the corpus texts."""
    if os.path.isdir(path):
        examples, corpus = load_beir_pairs(path, split)
        return examples, list(corpus.values())
    return load_jsonl_pairs(path), None


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of an epoch: a permutation that depends on the seed and the epoch only,
    so a resumed run sees the same batches as an uninterrupted one."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batches_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)  # the last batch may be smaller, as sentence-transformers keeps it


def mining_pool(examples: list[TrainExample], corpus: list[str] | None = None) -> list[str]:
    """The texts hard negatives are mined from: the corpus when given, else every positive and
    negative of the training data (first occurrence order, so the pool is the same every run)."""
    if corpus is not None:
        return list(corpus)
    seen: dict[str, None] = {}
    for ex in examples:
        seen.setdefault(ex.positive)
        for neg in ex.negatives:
            seen.setdefault(neg)
    return list(seen)


def mine_hard_negative_ids(embed_texts, examples: list[TrainExample], pool: list[str], count: int, skip: int = 0,
                           batch_size: int = 64) -> list[list[int]]:
    """For each example, the pool positions of the `count` texts the current model ranks highest
    for its query, after the first `skip`, leaving out every positive of that query (by text).

    embed_texts(list[str]) -> float32 [n, d] normalised NumPy embeddings.
    """
    from ..search.index import FlatIndex

    if not pool:
        raise ValueError("the pool to mine hard negatives from is empty")
    positives_of: dict[str, set[str]] = {}
    for ex in examples:
        positives_of.setdefault(ex.query, set()).add(ex.positive)
    vectors = np.concatenate([embed_texts(pool[i:i + batch_size]) for i in range(0, len(pool), batch_size)])
    index = FlatIndex(vectors.shape[1])
    index.add(vectors)
    queries = list(dict.fromkeys(ex.query for ex in examples))
    qvec = np.concatenate([embed_texts(queries[i:i + batch_size]) for i in range(0, len(queries), batch_size)])
    depth = min(len(pool), skip + count + max(len(p) for p in positives_of.values()))
    _, ids = index.search(qvec, k=depth)
    mined = {}
    for q, row in zip(queries, ids):
        kept = [int(i) for i in row if int(i) >= 0 and pool[int(i)] not in positives_of[q]]
        mined[q] = kept[skip:skip + count]
    return [list(mined[ex.query]) for ex in examples]


def mine_hard_negatives(embed_texts, examples: list[TrainExample], pool: list[str] | None, count: int,
                        skip: int = 0, batch_size: int = 64) -> list[list[str]]:
    """mine_hard_negative_ids as texts; the pool defaults to the training texts (mining_pool)."""
    pool = mining_pool(examples, pool)
    ids = mine_hard_negative_ids(embed_texts, examples, pool, count, skip, batch_size)
    return [[pool[i] for i in row] for row in ids]
