"""Does flushing subnormal floats change the encoder's speed or output? An A/B on Vaswani.

    python bench/flush_to_zero.py mambaret/models/default [OTHER_MODEL ...] [--docs 2000] [--rounds 2]

Encodes the first --docs Vaswani documents at 1 thread with the x86 MXCSR flags flush-to-zero and
denormals-are-zero off, then on, for each model folder, alternating, --rounds times. At 1 thread
the engine's parallel region runs on the calling thread, so setting this thread's MXCSR (through
a three-line C helper compiled here with gcc) covers the whole forward. Prints documents/s and
the sum of the embeddings' absolute values (a changed output shows there). x86 only.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

HELPER = r"""
#include <xmmintrin.h>
void set_flush_to_zero(int on) { _mm_setcsr(on ? (_mm_getcsr() | 0x8040u) : (_mm_getcsr() & ~0x8040u)); }
"""


def mxcsr_helper(folder: str):
    source, library = os.path.join(folder, "ftz.c"), os.path.join(folder, "libftz.so")
    with open(source, "w") as f:
        f.write(HELPER)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", source, "-o", library], check=True)
    return ctypes.CDLL(library)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model folders")
    ap.add_argument("--collection", default=os.path.join(REPO, "..", "shared", "data", "vaswani"))
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)

    import mambaret as mr
    from mambaret.search.retrieval import load_collection

    docs = list(load_collection(args.collection).docs.values())[:args.docs]
    encoders = {path: mr.MambaEncoder.from_pretrained(path, threads=1) for path in args.models}
    for encoder in encoders.values():
        encoder.encode(docs[:256])  # warm-up
    with tempfile.TemporaryDirectory() as folder:
        helper = mxcsr_helper(folder)
        for _ in range(args.rounds):
            for path, encoder in encoders.items():
                for on in (0, 1):
                    helper.set_flush_to_zero(on)
                    try:
                        t = time.perf_counter()
                        embeddings = encoder.encode(docs)
                        seconds = time.perf_counter() - t
                    finally:
                        helper.set_flush_to_zero(0)
                    print(f"{path} flush-to-zero={'on' if on else 'off'}: {len(docs) / seconds:.1f} documents/s, "
                          f"sum |e| = {float(abs(embeddings).sum()):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
