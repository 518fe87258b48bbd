"""Scores models on held-out documentation: sections of Debian -doc packages that no training stage
reads (statistics, image processing, bioinformatics; `SCI_DOC_HELD_OUT` in build_data.py). Each
section title is a query, its text the one relevant passage among all the sections' texts.

    python3 recipes/default_model/heldout_eval.py mambaret/models/default build/x/distill/final --teacher

The dev pairs measure what the student learned on the sources it was trained on; these pairs measure
how it carries to a domain it has not seen, as the collections it is judged on will be. Made from
training-side packages only: no test collection is read.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)

from build_data import SCI_DOC_HELD_OUT, clean_pair, sci_doc_pairs, stable_hash  # noqa: E402
from readers.text import dedup_key  # noqa: E402

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


def ndcg_at_10(queries: np.ndarray, passages: np.ndarray) -> float:
    """nDCG@10 with passage i the one relevant passage of query i (ties ranked against it)."""
    scores = queries @ passages.T
    ranks = (scores > np.diag(scores)[:, None]).sum(axis=1)
    return float(np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0).mean())


def teacher_embeddings(texts: list, threads: int) -> np.ndarray:
    key = hashlib.sha1("\n".join(texts).encode("utf-8")).hexdigest()[:12]
    path = os.path.join(CACHE, f"teacher.{key}.npy")
    if os.path.isfile(path):
        return np.load(path)
    import torch
    from sentence_transformers import SentenceTransformer

    sys.path.insert(0, HERE)
    from train import teacher_folder

    torch.set_num_threads(threads)
    model = SentenceTransformer(teacher_folder(), device="cpu")
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    os.makedirs(CACHE, exist_ok=True)
    np.save(path, vectors.astype(np.float32))
    return vectors


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
        vectors = teacher_embeddings(queries + passages, args.threads)
        scores["teacher (all-MiniLM-L6-v2)"] = ndcg_at_10(vectors[:len(pairs)], vectors[len(pairs):])
        print(f"teacher: nDCG@10 {scores['teacher (all-MiniLM-L6-v2)']:.4f} ({time.time() - started:.0f} s)", flush=True)
    from mambaret import MambaEncoder

    for folder in args.models:
        started = time.time()
        encoder = MambaEncoder.from_pretrained(folder, threads=args.threads)
        q = np.asarray(encoder.encode(queries, normalize_embeddings=True, show_progress_bar=False))
        p = np.asarray(encoder.encode(passages, normalize_embeddings=True, show_progress_bar=False))
        scores[folder] = ndcg_at_10(q, p)
        print(f"{folder}: nDCG@10 {scores[folder]:.4f} ({time.time() - started:.0f} s)", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"pairs": len(pairs), "packages": SCI_DOC_HELD_OUT, "ndcg@10": scores}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
