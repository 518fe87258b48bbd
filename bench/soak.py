"""Thread soak: 8 threads mixing encode, search, add and evaluate on shared objects.

    python bench/soak.py --seconds 120 --omp 1,2 --json bench/results/soak.json

Each OMP_NUM_THREADS value runs in its own process (OpenMP reads it once). In each, one encoder
(a small random model, CPU), one unchanging FlatIndex, one growing FlatIndex and one qrels/run
pair are shared by all the threads, each of which picks operations at random until time is up:

- encode: a fixed batch of texts; must equal the serial result bit for bit;
- search: the unchanging index; must equal the serial result (ids and scores);
- add: the next batch of vectors into the growing index (adds happen in sequence order; at a
  bounded size the index is reset and the sequence starts again);
- search-growing: a search racing the adds; vector i scores i+1 against the query, so a result
  names the prefix it saw, and it must equal the exact top-k of that prefix, a whole number of adds;
- evaluate: the fixed run against the qrels; must equal the serial metrics.

Any exception or mismatch fails the run. RSS is sampled as calls go by; after a warm-up of
``--warmup`` calls, its growth over the following ``--window`` calls (10,000 by default) must stay
under ``--rss-limit-mb`` (5). Exit status 0 when everything held; a JSON summary is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOKENIZER = os.path.join(ROOT, "..", "shared", "data", "tokenizers", "gpt-neox-20b.json")
DIM, GROW_DIM, GROW_BATCH, GROW_MAX = 32, 16, 64, 8192
OPS = ("encode", "search", "add", "search_growing", "evaluate")


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Fixture:
    """The shared objects and their serial (expected) results."""

    def __init__(self, folder: str, threads: int):
        import numpy as np

        import mambaret as mr
        from mambaret.arch.random_model import write_random_model

        tokenizer = TOKENIZER if os.path.exists(TOKENIZER) else None
        write_random_model(folder, seed=1, tokenizer_json=tokenizer, hidden_size=DIM, num_hidden_layers=2)
        self.np, self.mr = np, mr
        self.encoder = mr.MambaEncoder.from_pretrained(folder, threads=threads)
        rng = np.random.default_rng(0)
        words = ["state", "space", "model", "retrieval", "dense", "vector", "query", "passage", "scan", "token"]
        self.batches = []
        for b in range(8):
            texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 40)))) for _ in range(8)]
            self.batches.append(texts if tokenizer else [[int(t) for t in rng.integers(2, 1000, 20)] for _ in texts])
        self.expected_embeddings = [self.encoder.encode(b) for b in self.batches]

        docs = rng.standard_normal((3000, DIM)).astype(np.float32)
        self.index = mr.FlatIndex(DIM, threads=threads)
        self.index.add(docs, ids=[f"doc{i}" for i in range(len(docs))])
        self.queries = [rng.standard_normal((int(rng.integers(1, 16)), DIM)).astype(np.float32) for _ in range(8)]
        self.expected_search = [self.index.search(q, k=10) for q in self.queries]

        self.growing = mr.FlatIndex(GROW_DIM, threads=threads)
        self.grow_vectors = np.zeros((GROW_MAX, GROW_DIM), dtype=np.float32)
        self.grow_vectors[:, 0] = np.arange(GROW_MAX) + 1.0  # vector i scores i+1 against e0
        self.grow_vectors[:, 1:] = rng.standard_normal((GROW_MAX, GROW_DIM - 1))
        self.grow_query = np.eye(1, GROW_DIM, dtype=np.float32)
        self.grow_lock = threading.Lock()  # puts adds in sequence order
        self.grow_next = 0

        qids = [f"q{i}" for i in range(20)]
        self.run = {q: {f"d{j}": float(rng.standard_normal()) for j in range(50)} for q in qids}
        self.qrels = {q: {f"d{j}": int(rng.integers(0, 3)) for j in rng.choice(100, 10, replace=False)} for q in qids}
        self.metrics = ["ndcg@10", "mrr@10", "recall@100", "map"]
        self.expected_eval = mr.evaluate(self.run, self.qrels, self.metrics)

    def call(self, op: str, rng: random.Random) -> None:
        np = self.np
        if op == "encode":
            b = rng.randrange(len(self.batches))
            got = self.encoder.encode(self.batches[b])
            if not np.array_equal(got, self.expected_embeddings[b]):
                raise AssertionError(f"encode of batch {b} differs from the serial result")
        elif op == "search":
            q = rng.randrange(len(self.queries))
            scores, ids = self.index.search(self.queries[q], k=10)
            want_scores, want_ids = self.expected_search[q]
            if not (np.array_equal(scores, want_scores) and np.array_equal(ids, want_ids)):
                raise AssertionError(f"search of query set {q} differs from the serial result")
        elif op == "add":
            with self.grow_lock:
                start = self.grow_next
                if start + GROW_BATCH > GROW_MAX:
                    self.growing.reset()
                    start = 0
                self.growing.add(self.grow_vectors[start:start + GROW_BATCH], ids=np.arange(start, start + GROW_BATCH))
                self.grow_next = start + GROW_BATCH
        elif op == "search_growing":
            k = rng.choice((1, 10, 100))
            scores, ids = self.growing.search(self.grow_query, k=k)
            seen = int(ids[0, 0]) + 1  # the best is the last vector of the prefix searched
            if seen == 0:
                if (ids != -1).any():
                    raise AssertionError("an empty result mixed with ids")
                return
            if seen % GROW_BATCH:
                raise AssertionError(f"a search saw {seen} vectors, not a whole number of adds")
            top = np.arange(seen - 1, max(seen - 1 - k, -1), -1)
            want_ids = np.full(k, -1, dtype=np.int64)
            want_ids[:top.size] = top
            want_scores = np.full(k, -np.inf, dtype=np.float32)
            want_scores[:top.size] = (self.grow_vectors[top] @ self.grow_query[0]).astype(np.float32)
            if not (np.array_equal(ids[0], want_ids) and np.allclose(scores[0], want_scores)):
                raise AssertionError(f"a search racing adds is not the top-{k} of the first {seen} vectors")
        elif op == "evaluate":
            got = self.mr.evaluate(self.run, self.qrels, self.metrics)
            if got != self.expected_eval:
                raise AssertionError("evaluate differs from the serial result")


def soak(seconds: float, threads: int, workers: int, warmup: int, window: int, max_calls: int | None = None) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        fx = Fixture(folder, threads)
        counts = {op: 0 for op in OPS}
        calls = [0]
        samples: list[tuple[int, int]] = []  # (calls so far, RSS bytes)
        errors: list[str] = []
        guard = threading.Lock()
        deadline = time.monotonic() + seconds

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < deadline and not errors and (max_calls is None or calls[0] < max_calls):
                op = rng.choice(OPS)
                try:
                    fx.call(op, rng)
                except BaseException as e:  # noqa: BLE001 - every failure is a finding
                    with guard:
                        errors.append(f"{op}: {type(e).__name__}: {e}")
                    return
                with guard:
                    counts[op] += 1
                    calls[0] += 1
                    if calls[0] % 250 == 0:
                        samples.append((calls[0], rss_bytes()))

        pool = [threading.Thread(target=worker, args=(seed,)) for seed in range(workers)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()

    after = [s for s in samples if s[0] >= warmup]
    growth = None
    if len(after) >= 2:
        base_calls, base_rss = after[0]
        in_window = [s for s in after if s[0] - base_calls <= window]
        growth = max(r for _, r in in_window) - base_rss
    return {"omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "threads": threads, "workers": workers,
            "seconds": seconds, "max_calls": max_calls, "calls": calls[0], "calls_by_op": counts, "errors": errors,
            "warmup_calls": warmup, "window_calls": window,
            "calls_after_warmup": (calls[0] - after[0][0]) if after else 0,
            "rss_growth_bytes": growth, "rss_samples": samples}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="per OMP_NUM_THREADS value")
    ap.add_argument("--calls", type=int, default=None, help="stop after this many calls (if sooner than --seconds)")
    ap.add_argument("--omp", default="1,2", help="OMP_NUM_THREADS values, each in its own process")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2000, help="calls before RSS is watched")
    ap.add_argument("--window", type=int, default=10000, help="calls over which RSS growth is measured")
    ap.add_argument("--rss-limit-mb", type=float, default=5.0)
    ap.add_argument("--json", help="write the summaries here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        threads = int(os.environ.get("OMP_NUM_THREADS") or 1)
        print(json.dumps(soak(args.seconds, threads, args.workers, args.warmup, args.window, args.calls)))
        return 0

    results, ok = [], True
    for omp in args.omp.split(","):
        env = {**os.environ, "OMP_NUM_THREADS": omp.strip(), "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--seconds", str(args.seconds),
               "--workers", str(args.workers), "--warmup", str(args.warmup), "--window", str(args.window)]
        if args.calls:
            cmd += ["--calls", str(args.calls)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            results.append({"omp_num_threads": omp, "errors": [f"child exited {done.returncode}"]})
            ok = False
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        growth = r["rss_growth_bytes"]
        r["rss_ok"] = growth is not None and growth < args.rss_limit_mb * 2**20
        r["window_complete"] = r["calls_after_warmup"] >= args.window
        ok = ok and not r["errors"] and r["rss_ok"]
        results.append(r)
        short = {k: v for k, v in r.items() if k != "rss_samples"}
        print(json.dumps(short))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"command": " ".join(sys.argv), "results": results}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
