"""Two checkouts of mambaret side by side: did a change alter the embeddings or slow the engine?

    git worktree add /tmp/mambaret-old REV && (cd /tmp/mambaret-old && MAMBARET_CUDA=0 python3 setup.py build_ext --inplace)
    python bench/encode_ab.py --old /tmp/mambaret-old --embeddings     # bit for bit, every SIMD path
    python bench/encode_ab.py --old /tmp/mambaret-old [--new .] [--rounds 6] [--threads 2] [--length 512]

--embeddings: each checkout encodes the same texts and token ids with the packaged default model and
a small random model, at 1 and 2 threads, max_tokens 50 / 64 / 8192, last, mean and all pooling,
normalised or not, under MAMBARET_SIMD=avx512, avx2 and portable; every array must be equal.

Each checkout runs in a subprocess of its own (its mambaret imported from that folder), on the same
seeded random checkpoint of mamba-130m-hf's shape (d 768, 24 layers, N 16, vocab 50280) and the same
tokens: a batch of `--batch` sequences of `--length` tokens, last-token pooling, `--reps` timed
forwards after a warm-up, the best kept. Rounds alternate which checkout goes first; the report gives
each round's tokens/s, the best of each checkout over the rounds, and new / old.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHAPE = dict(hidden_size=768, num_hidden_layers=24, vocab_size=50280, state_size=16, conv_kernel=4, expand=2)


def import_checkout(checkout: str):
    """mambaret from that folder, not the installed one."""
    sys.path.insert(0, os.path.abspath(checkout))
    import mambaret

    assert os.path.abspath(mambaret.__file__).startswith(os.path.abspath(checkout)), mambaret.__file__
    return mambaret


def worker(checkout: str, model_dir: str, batch: int, length: int, threads: int, reps: int) -> None:
    mr = import_checkout(checkout)
    enc = mr.MambaEncoder.from_pretrained(model_dir, threads=threads, max_tokens=8192)
    tokens = np.random.default_rng(0).integers(0, SHAPE["vocab_size"], batch * length).astype(np.int32)
    offsets = np.arange(0, batch * length + 1, length, dtype=np.int64)
    enc.model.forward(tokens, offsets, threads=threads, max_tokens=8192)  # warm-up: pages, workspace
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        enc.model.forward(tokens, offsets, threads=threads, max_tokens=8192)
        best = min(best, time.perf_counter() - start)
    print(f"{batch * length / best:.1f}")


def embeddings_worker(checkout: str, out: str) -> None:
    mr = import_checkout(checkout)
    from mambaret.random_model import write_random_model

    texts = [("state space models scale linearly " * (i % 37 + 1)) for i in range(60)]
    arrays = {}
    for threads in (1, 2):
        for max_tokens in (64, 8192):
            # normalize=False: the engine's output whatever the folder's default (0.2.0 made it True)
            enc = mr.MambaEncoder.from_pretrained(mr.DEFAULT_MODEL, threads=threads, max_tokens=max_tokens,
                                                  normalize=False)
            arrays[f"default_t{threads}_m{max_tokens}"] = enc.encode(texts)
            arrays[f"default_normalized_t{threads}_m{max_tokens}"] = enc.encode(texts, normalize_embeddings=True)
    path = write_random_model(os.path.join(os.path.dirname(out), "random"), seed=3, hidden_size=48,
                              num_hidden_layers=3, vocab_size=300)
    model = mr.MambaEncoder.from_pretrained(path, threads=2, max_tokens=50).model
    ids = [np.random.default_rng(i).integers(0, 300, 5 + 13 * i).astype(np.int32) for i in range(12)]
    tokens = np.concatenate(ids)
    offsets = np.cumsum([0] + [len(x) for x in ids]).astype(np.int64)
    for pooling in ("last", "mean", "all"):
        arrays[f"random_{pooling}"] = np.asarray(model.forward(tokens, offsets, pooling=pooling, max_tokens=50,
                                                               threads=2))
    np.savez(out, **arrays)


def compare_embeddings(args) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for simd in ("avx512", "avx2", "portable"):
            files = {}
            for name in ("old", "new"):
                files[name] = os.path.join(tmp, f"{name}_{simd}.npz")
                cmd = [sys.executable, os.path.abspath(__file__), "--old", args.old, "--embeddings-worker",
                       getattr(args, name), files[name]]
                subprocess.run(cmd, check=True, cwd="/", env=dict(os.environ, MAMBARET_SIMD=simd))
            old, new = np.load(files["old"]), np.load(files["new"])
            differ = [k for k in old.files if not np.array_equal(old[k], new[k])]
            print(f"MAMBARET_SIMD={simd}: {len(old.files)} arrays, "
                  + (f"DIFFER: {', '.join(differ)}" if differ else "all bit-identical"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="the checkout to compare against (its _C built in place)")
    ap.add_argument("--new", default=REPO)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "mambaret-bench", "ab-130m"))
    ap.add_argument("--embeddings", action="store_true", help="compare embeddings bit for bit instead of speed")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--embeddings-worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.embeddings_worker:
        embeddings_worker(*args.embeddings_worker)
        return
    if args.embeddings:
        compare_embeddings(args)
        return
    if args.worker:
        worker(args.worker[0], args.worker[1], args.batch, args.length, args.threads, args.reps)
        return
    if not os.path.exists(os.path.join(args.cache, "config.json")):
        sys.path.insert(0, REPO)
        from mambaret.random_model import write_random_model

        write_random_model(args.cache, seed=0, **SHAPE)
    simd = subprocess.run([sys.executable, "-c", "import mambaret; print(mambaret._C.build_info()['simd'])"],
                          cwd=args.new, capture_output=True, text=True, check=True).stdout.strip()
    print(f"130M shape, {args.batch} x {args.length} tokens, {args.threads} threads, SIMD {simd}; "
          f"best of {args.reps} forwards per run, {args.rounds} alternating rounds")
    results: dict[str, list[float]] = {"old": [], "new": []}
    for r in range(args.rounds):
        order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
        row = {}
        for name in order:
            checkout = getattr(args, name)
            cmd = [sys.executable, os.path.abspath(__file__), "--old", args.old, "--worker", checkout, args.cache,
                   "--batch", str(args.batch), "--length", str(args.length), "--threads", str(args.threads),
                   "--reps", str(args.reps)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd="/")
            row[name] = float(out.stdout.strip().splitlines()[-1])
            results[name].append(row[name])
        print(f"round {r + 1}: old {row['old']:.0f} tokens/s, new {row['new']:.0f} tokens/s, "
              f"new / old {row['new'] / row['old']:.3f}")
    best_old, best_new = max(results["old"]), max(results["new"])
    print(f"best: old {best_old:.0f} tokens/s, new {best_new:.0f} tokens/s, new / old {best_new / best_old:.3f}")


if __name__ == "__main__":
    main()
