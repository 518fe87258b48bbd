"""Which BLAS the CPU engine should load: sgemm rates on the Mamba-130M projections and the
model's own throughput with each candidate, in one run.

    python bench/blas_choice.py [--out bench/results/blas.md]

Candidates: the scipy-openblas32 wheel (what `pip install mambaret` brings), the built-in C
fallback, and system libraries when present (Debian's libopenblas0-pthread, libblis4-pthread).
The engine calls the BLAS from each of its own threads, one thread each, so rates are per thread.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

import mambaret as mr
from mambaret import _C
from mambaret.arch.random_model import write_random_model

SYSTEM_CANDIDATES = {
    "Debian OpenBLAS 0.3.21 (pthread)": "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "Debian BLIS (pthread)": "/usr/lib/x86_64-linux-gnu/blis-pthread/libblis.so.4",
}
SHAPES = {  # (tokens, in, out) of the four projections at d = 768
    "in_proj 4096x768 -> 3072": (4096, 768, 3072),
    "out_proj 4096x1536 -> 768": (4096, 1536, 768),
    "x_proj 4096x1536 -> 80": (4096, 1536, 80),
    "dt_proj 4096x48 -> 1536": (4096, 48, 1536),
}


def best_seconds(fn, repeats=3):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    candidates = {"scipy-openblas32 wheel": "openblas", "built-in C fallback": "builtin"}
    candidates.update({name: path for name, path in SYSTEM_CANDIDATES.items() if os.path.exists(path)})
    rng = np.random.default_rng(0)
    model_dir = write_random_model(tempfile.mkdtemp(prefix="blas-choice-"), seed=0, shape="130m")
    tokens = [rng.integers(0, 50280, 512).tolist() for _ in range(8)]
    rows = []
    for name, choice in candidates.items():
        mr.configure_blas(choice)
        rates = []
        for _, (m, k, n) in SHAPES.items():
            a = rng.standard_normal((m, k), dtype=np.float32)
            w = rng.standard_normal((n, k), dtype=np.float32)
            seconds = best_seconds(lambda: _C.op_gemm(a, w, threads=1), repeats=2 if choice == "builtin" else 3)
            rates.append(2 * m * k * n / seconds / 1e9)
        enc = mr.MambaEncoder.from_pretrained(model_dir, threads=1)
        seconds = best_seconds(lambda: enc.encode(tokens, batch_size=8), repeats=1 if choice == "builtin" else 2)
        rows.append((name, rates, len(tokens) * 512 / seconds))
        print(name, [f"{r:.1f}" for r in rates], f"{rows[-1][2]:.0f} tokens/s", flush=True)
    mr.configure_blas()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines = ["# BLAS choice for the CPU engine", "",
             f"Command: `python {' '.join(sys.argv)}`  ", f"Machine: {cpu}, {os.cpu_count()} cores, "
             f"{platform.system()} {platform.release()}; load after the run: `{load}`", "",
             "sgemm GFLOP/s on one thread (how the engine calls it) and Mamba-130M-shape tokens/s on one "
             "thread (8 x 512 tokens):", "",
             "| BLAS | " + " | ".join(SHAPES) + " | model tokens/s |",
             "|---|" + "---|" * (len(SHAPES) + 1)]
    for name, rates, tps in rows:
        lines.append(f"| {name} | " + " | ".join(f"{r:.1f}" for r in rates) + f" | {tps:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
