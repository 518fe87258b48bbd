"""Mamba-2's engine measured: speed against our Mamba-1 and transformers' Mamba2Model, time per
token and peak memory as a document grows, and a llama-embed-mamba2-1.3b-shaped model beside
transformers.

    python bench/mamba2_bench.py speed   [--rounds 4] [--threads 2]   # mamba2-130m shape, 512 tokens
    python bench/mamba2_bench.py length  [--threads 2]                # 512 .. 32,768 tokens, one document
    python bench/mamba2_bench.py large   [--threads 2]                # d 2048, 48 layers, 512 and 8,192 tokens

Models are seeded random checkpoints of the published shapes, written once under bench/.cache:
mamba2-130m (d 768, 24 layers, 24 heads of 64, one group, N 128, vocab 50,280), mamba-130m (d 768,
24 layers, N 16) and llama-embed-mamba2-1.3b (d 2048, 48 layers, 64 heads of 64, one group, N 128).
Speed is the forward of packed sequences with last-token pooling (our engine) or
Mamba2Model(...).last_hidden_state under torch.no_grad with torch's threads set to ours; rounds
alternate the engines and each reports its best. Peak RSS is each measurement's own process
(ru_maxrss) after loading and one forward.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".cache", "mamba2")
VOCAB = 50280
SHAPES = {
    "mamba2-130m": ("mamba2", dict(hidden_size=768, num_hidden_layers=24, num_heads=24, head_dim=64, n_groups=1,
                                   state_size=128, conv_kernel=4, expand=2, vocab_size=VOCAB)),
    "mamba-130m": ("mamba", dict(hidden_size=768, num_hidden_layers=24, state_size=16, conv_kernel=4, expand=2,
                                 vocab_size=VOCAB)),
    "mamba2-1.3b": ("mamba2", dict(hidden_size=2048, num_hidden_layers=48, num_heads=64, head_dim=64, n_groups=1,
                                   state_size=128, conv_kernel=4, expand=2, vocab_size=VOCAB)),
}


def checkpoint(name: str) -> str:
    """A seeded random checkpoint of the shape, written once (transformers for Mamba-2, our writer for Mamba-1)."""
    path = os.path.join(CACHE, name)
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    family, config = SHAPES[name]
    if family == "mamba":
        from mambaret.arch.random_model import write_random_model

        return write_random_model(path, seed=1, **config)
    import torch
    from transformers import Mamba2Config, Mamba2Model

    torch.manual_seed(1)
    Mamba2Model(Mamba2Config(**config)).save_pretrained(path)
    return path


def simd_level() -> str:
    import mambaret

    return mambaret._C.build_info()["simd"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tokens_for(batch: int, length: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, VOCAB, batch * length).astype(np.int32)


class Ours:
    def __init__(self, name: str, threads: int):
        import mambaret as mr

        self.threads = threads
        self.encoder = mr.MambaEncoder.from_pretrained(checkpoint(name), threads=threads, max_tokens=8192)

    def run(self, batch: int, length: int) -> float:
        tokens = tokens_for(batch, length)
        offsets = np.arange(0, batch * length + 1, length, dtype=np.int64)
        start = time.perf_counter()
        self.encoder.model.forward(tokens, offsets, threads=self.threads, max_tokens=8192)
        return time.perf_counter() - start


class Transformers:
    def __init__(self, name: str, threads: int):
        import torch
        from transformers import Mamba2Model

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = Mamba2Model.from_pretrained(checkpoint(name)).eval()

    def run(self, batch: int, length: int) -> float:
        ids = self.torch.from_numpy(tokens_for(batch, length).astype(np.int64)).view(batch, length)
        with self.torch.no_grad():
            start = time.perf_counter()
            self.model(ids).last_hidden_state
            return time.perf_counter() - start


def speed(args) -> None:
    engines = {"ours Mamba-2": (Ours("mamba2-130m", args.threads), 16),
               "ours Mamba-1": (Ours("mamba-130m", args.threads), 16),
               "transformers Mamba2Model": (Transformers("mamba2-130m", args.threads), 4)}
    for engine, batch in engines.values():
        engine.run(batch, args.length)  # warm-up
    best = {name: 0.0 for name in engines}
    print(f"mamba2-130m / mamba-130m shapes, {args.length}-token sequences, {args.threads} threads, SIMD "
          f"{simd_level()}; best of 2 forwards per round, {args.rounds} rounds, order rotating")
    names = list(engines)
    for r in range(args.rounds):
        row = []
        for name in names[r % 3:] + names[:r % 3]:
            engine, batch = engines[name]
            rate = max(batch * args.length / engine.run(batch, args.length) for _ in range(2))
            best[name] = max(best[name], rate)
            row.append(f"{name} {rate:.0f}")
        print(f"round {r + 1}: " + ", ".join(row) + " tokens/s")
    m2, m1, tf = best["ours Mamba-2"], best["ours Mamba-1"], best["transformers Mamba2Model"]
    print(f"best: ours Mamba-2 {m2:.0f}, ours Mamba-1 {m1:.0f}, transformers Mamba2Model {tf:.0f} tokens/s")
    print(f"Mamba-2 / Mamba-1 {m2 / m1:.3f} (target >= 0.9); ours / transformers {m2 / tf:.2f}x (target >= 3)")


def measure(engine_kind: str, name: str, length: int, threads: int) -> None:
    """One process, one measurement: load, one warm-up forward at 512 tokens, the timed forward."""
    engine = (Ours if engine_kind == "ours" else Transformers)(name, threads)
    engine.run(1, min(length, 512))
    seconds = engine.run(1, length)
    print(json.dumps({"tokens_per_s": length / seconds, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


def in_process(engine_kind: str, name: str, length: int, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "measure", engine_kind, name, str(length), "--threads",
                          str(threads)], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def length(args) -> None:
    print(f"mamba2-130m shape, one document, {args.threads} threads, SIMD {simd_level()}; each length in a process "
          "of its own")
    base = None
    for n in (512, 8192, 16384, 32768):
        r = in_process("ours", "mamba2-130m", n, args.threads)
        per_token = r["seconds"] / n * 1e6
        base = base or per_token
        print(f"{n:>6} tokens: {r['tokens_per_s']:7.0f} tokens/s, {per_token:7.1f} us per token "
              f"({per_token / base:.3f}x of 512), peak RSS {r['peak_rss_mb']:.0f} MB")


def large(args) -> None:
    checkpoint("mamba2-1.3b")
    print(f"llama-embed-mamba2-1.3b shape (d 2048, 48 layers, 64 heads of 64, N 128), one document, "
          f"{args.threads} threads, SIMD {simd_level()}; each measurement in a process of its own")
    for n in (512, 8192):
        ours = in_process("ours", "mamba2-1.3b", n, args.threads)
        theirs = in_process("transformers", "mamba2-1.3b", n, args.threads)
        print(f"{n:>5} tokens: ours {ours['tokens_per_s']:6.1f} tokens/s, peak RSS {ours['peak_rss_mb']:.0f} MB; "
              f"transformers {theirs['tokens_per_s']:6.1f} tokens/s, peak RSS {theirs['peak_rss_mb']:.0f} MB; "
              f"speed ratio {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["speed", "length", "large", "measure"])
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    args = parser.parse_args()
    if args.what == "measure":
        engine_kind, name, n = args.rest
        measure(engine_kind, name, int(n), args.threads)
    else:
        {"speed": speed, "length": length, "large": large}[args.what](args)


if __name__ == "__main__":
    main()
