"""Where a training step's time goes: torch's profiler over one step on the Mamba-130M shape.

    python bench/train_profile.py [--length 512] [--threads 2] [--rows 30] [--shapes]

One step = forward through mambaret.nn.MambaModel (packed, one sequence), a loss on the
normalised last-token state, backward, gradient clipping and the trainer's fused AdamW; two
warm-up steps first. Prints the ops by self CPU time (bench/results/train.md has a run).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--shapes", action="store_true", help="group the ops by their input shapes too")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    import cpu_bench
    import train_bench
    from mambaret.nn import MambaModel, last_token_embeddings
    from mambaret.train import make_optimizer

    torch.set_num_threads(args.threads)
    model = MambaModel.from_pretrained(train_bench.ensure_model(cpu_bench.DEFAULT_CACHE, "130m")).float().train()
    ids = cpu_bench.bench_tokens(1, args.length, cpu_bench.VOCAB_ROWS, train_bench.TOKEN_SEED).astype(np.int64)
    tokens, offsets = torch.from_numpy(ids.reshape(-1)), torch.tensor([0, args.length])
    direction = torch.nn.functional.normalize(torch.randn(model.config.hidden_size), dim=0)
    optimizer = make_optimizer(model, lr=1e-5)

    def step():
        optimizer.zero_grad(set_to_none=True)
        pooled = last_token_embeddings(model.forward_packed(tokens, offsets), offsets)
        (torch.nn.functional.normalize(pooled, dim=-1) @ direction).sum().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    step()
    step()
    t = time.perf_counter()
    step()
    print(f"one step, 1 x {args.length} tokens, {args.threads} threads: {time.perf_counter() - t:.2f} s")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        step()
    averages = prof.key_averages(group_by_input_shape=args.shapes)
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
