"""Inputs that cost a lot: one very long document, one very large query batch. Peak memory.

    python bench/long_inputs.py document --tokens 10000000      # a 10M-token document, tiny model
    python bench/long_inputs.py queries --rows 1000000          # a 1M-row query batch, k=10

Each measurement runs in a fresh process, which first does the same job at a small size (so
the code, the model and the BLAS are loaded and warm) and reads its peak RSS (VmHWM), then does
the large one and reads the peak again. What the large job adds beyond its own input and output
is the working memory, which must not grow with the input: the encoder cuts a document into
micro-batches of ``max_tokens`` tokens and carries the conv and scan state between them; the
search takes queries in groups whose per-thread heaps fit a fixed budget.
Prints one JSON line per run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peak_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def document(tokens: int, hidden: int, layers: int, max_tokens: int, threads: int) -> dict:
    import numpy as np

    import mambaret as mr
    from mambaret.arch.random_model import write_random_model

    with tempfile.TemporaryDirectory() as folder:
        write_random_model(folder, seed=0, hidden_size=hidden, num_hidden_layers=layers, vocab_size=1024)
        enc = mr.MambaEncoder.from_pretrained(folder, max_tokens=max_tokens, threads=threads)
        rng = np.random.default_rng(0)
        small = rng.integers(1, 1024, size=4 * max_tokens, dtype=np.int32)
        enc.encode(small)
        warm = peak_rss()
        doc = rng.integers(1, 1024, size=tokens, dtype=np.int32)
        start = time.perf_counter()
        emb = enc.encode(doc)
        seconds = time.perf_counter() - start
        peak = peak_rss()
    assert emb.shape == (hidden,) and np.isfinite(emb).all()
    return {"job": "document", "tokens": tokens, "hidden_size": hidden, "layers": layers,
            "max_tokens": max_tokens, "threads": threads, "input_bytes": doc.nbytes,
            "warm_peak_rss": warm, "peak_rss": peak, "added_beyond_input": peak - warm - doc.nbytes,
            "seconds": seconds}


def queries(rows: int, dim: int, index_rows: int, k: int, threads: int) -> dict:
    import numpy as np

    import mambaret as mr

    rng = np.random.default_rng(0)
    index = mr.FlatIndex(dim, threads=threads)
    index.add(rng.standard_normal((index_rows, dim), dtype=np.float32))
    index.search(rng.standard_normal((1024, dim), dtype=np.float32), k=k)
    q = rng.standard_normal((rows, dim), dtype=np.float32)
    warm = peak_rss()
    start = time.perf_counter()
    scores, ids = index.search(q, k=k)
    seconds = time.perf_counter() - start
    peak = peak_rss()
    out_bytes = scores.nbytes + ids.nbytes
    return {"job": "queries", "rows": rows, "dim": dim, "index_rows": index_rows, "k": k, "threads": threads,
            "input_bytes": q.nbytes, "output_bytes": out_bytes, "warm_peak_rss": warm, "peak_rss": peak,
            "added_beyond_output": peak - warm - out_bytes, "seconds": seconds}


def run_child(argv: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", *argv], env=env,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job", choices=("document", "queries"))
    ap.add_argument("--tokens", type=int, default=10_000_000)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--index-rows", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.child:
        print(json.dumps(run_child(sys.argv[1:] if argv is None else argv)))
        return 0
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)
    if args.job == "document":
        result = document(args.tokens, args.hidden, args.layers, args.max_tokens, threads)
    else:
        result = queries(args.rows, args.dim, args.index_rows, args.k, threads)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
