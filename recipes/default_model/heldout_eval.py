"""Scores models on held-out documentation: sections of Debian -doc packages that no training stage
reads (statistics, image processing, bioinformatics; `SCI_DOC_HELD_OUT` in build_data.py). Each
section title is a query, its text the one relevant passage among all the sections' texts.

    python3 recipes/default_model/heldout_eval.py mambaret/models/default build/x/distill/final --teacher

Every model after the first is compared with the first, query by query: the mean difference in
nDCG@10 and its 95 % paired-bootstrap interval, so that a gain can be told from the spread of the
queries.

The dev pairs measure what the student learned on the sources it was trained on; these pairs measure
how it carries to a domain it has not seen, as the collections it is judged on will be. Made from
training-side packages only: no test collection is read.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

from build_data import (SCI_DOC_HELD_OUT, clean_pair, embed_texts, load_teacher, sci_doc_pairs,  # noqa: E402
                        stable_hash)
from readers.text import dedup_key  # noqa: E402

from mambaret.evaluation.metrics import evaluate  # noqa: E402

CACHE = os.path.join(REPO, "build", "heldout_eval")


def heldout_pairs(limit: int, max_words: int = 96) -> list:
    """Up to ``limit`` cleaned (title, text) pairs, one per distinct text, in a fixed hashed order."""
    seen, pairs = set(), []
    for query, positive, _ in sci_doc_pairs(SCI_DOC_HELD_OUT):
        pair = clean_pair("sci-doc", query, positive, max_words)
        if pair is None or dedup_key(pair[1]) in seen:
            continue
        seen.add(dedup_key(pair[1]))
        pairs.append(pair)
    pairs.sort(key=lambda p: stable_hash(dedup_key(p[1])))
    return pairs[:limit]


def ndcg_at_10_per_query(queries: np.ndarray, passages: np.ndarray) -> np.ndarray:
    """Each query's nDCG@10 (mambaret.evaluate's), with passage i the one relevant passage of query i."""
    scores = queries @ passages.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    run = {str(i): {str(j): float(scores[i, j]) for j in row} for i, row in enumerate(top)}
    values = evaluate(run, {str(i): {str(i): 1} for i in range(len(scores))}, ["ndcg@10"], per_query=True)
    return np.array([values[str(i)]["ndcg@10"] for i in range(len(scores))])


def bootstrap_interval(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 2.5 and 97.5 percentiles of the mean of `values` (one per query) over resamples of the
    queries."""
    values = np.asarray(values, dtype=np.float64)
    picks = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    low, high = np.percentile(values[picks].mean(axis=1), [2.5, 97.5])
    return float(low), float(high)


def paired_bootstrap(new: np.ndarray, old: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of new - old over the queries, with the 2.5 and 97.5 percentiles of that mean over
    resamples of the queries (both models scored on the same resampled queries)."""
    diff = np.asarray(new, dtype=np.float64) - np.asarray(old, dtype=np.float64)
    low, high = bootstrap_interval(diff, resamples, seed)
    return {"mean": float(diff.mean()), "low": low, "high": high,
            "better": int((diff > 0).sum()), "worse": int((diff < 0).sum())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="model folders that MambaEncoder loads")
    parser.add_argument("--teacher", action="store_true", help="score the teacher too (cached after one run)")
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the scores here")
    args = parser.parse_args(argv)
    pairs = heldout_pairs(args.pairs)
    queries, passages = [q for q, _ in pairs], [p for _, p in pairs]
    print(f"{len(pairs)} held-out pairs from {', '.join(SCI_DOC_HELD_OUT)}", flush=True)
    scores = {}
    if args.teacher:
        started = time.time()
        os.makedirs(CACHE, exist_ok=True)  # embed_texts keeps the vectors there, one file per chunk
        vectors = embed_texts(load_teacher(args.threads), queries + passages, os.path.join(CACHE, "teacher"),
                              chunk=4096, batch_size=64)
        teacher = float(ndcg_at_10_per_query(vectors[:len(pairs)], vectors[len(pairs):]).mean())
        scores["teacher (all-MiniLM-L6-v2)"] = teacher
        print(f"teacher: nDCG@10 {teacher:.4f} ({time.time() - started:.0f} s)", flush=True)
    from mambaret import MambaEncoder

    per_query, against_first = {}, {}
    for folder in args.models:
        started = time.time()
        encoder = MambaEncoder.from_pretrained(folder, threads=args.threads)
        q = np.asarray(encoder.encode(queries, normalize_embeddings=True, show_progress_bar=False))
        p = np.asarray(encoder.encode(passages, normalize_embeddings=True, show_progress_bar=False))
        per_query[folder] = ndcg_at_10_per_query(q, p)
        scores[folder] = float(per_query[folder].mean())
        print(f"{folder}: nDCG@10 {scores[folder]:.4f} ({time.time() - started:.0f} s)", flush=True)
    first = args.models[0] if args.models else None
    for folder in args.models[1:]:
        against_first[folder] = paired_bootstrap(per_query[folder], per_query[first])
        d = against_first[folder]
        print(f"{folder} - {first}: {d['mean']:+.4f}, 95 % interval [{d['low']:+.4f}, {d['high']:+.4f}], "
              f"{d['better']} queries better, {d['worse']} worse", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"pairs": len(pairs), "packages": SCI_DOC_HELD_OUT, "ndcg@10": scores,
                       "against_first": against_first}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
