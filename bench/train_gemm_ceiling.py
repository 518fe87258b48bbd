"""What the torch GEMMs alone allow: a training step's matrix products timed with nothing else.

    python bench/train_gemm_ceiling.py [--length 512] [--threads 2] [--rounds 3]

A training step on the Mamba-130M shape runs 12 matrix products a layer through torch (each of
in_proj, x_proj, dt_proj and out_proj forward, then its input and weight gradients), 288 in all
at 24 layers. This runs exactly those products, with the layouts autograd gives them and fresh
tensors per layer (as a step touches fresh weights), and nothing else. Each round also measures
the two denominators of train_bench.py's targets in the same minute: the OpenBLAS sgemm rate on
in_proj's shape and our C engine's inference forward on the same tokens. Then

- efficiency ceiling = 3 x 179.3 MFLOP/token x tokens / GEMM time / sgemm rate: the efficiency
  a step would have if everything but its GEMMs took no time;
- step / forward floor = GEMM time / inference forward: the step-cost ratio on the same terms.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

D, LAYERS = 768, 24            # the 130M shape (train_bench.SHAPES["130m"])
E, RANK, STATE = 2 * D, 48, 16  # expand 2, dt rank ceil(D / 16), state 16: cpu_bench.flops_per_token's shape


def layer_tensors(torch, T: int) -> dict:
    """A layer's weights, activations and output gradients, shaped as in a step."""
    r = lambda *shape: torch.randn(*shape)  # noqa: E731
    return {"w_in": r(2 * E, D), "w_x": r(RANK + 2 * STATE, E), "w_dt": r(E, RANK), "w_out": r(D, E),
            "x": r(T, D), "u": r(T, E), "dt_low": r(T, RANK), "y": r(T, E),
            "g_xz": r(T, 2 * E), "g_dbc": r(T, RANK + 2 * STATE), "g_dt": r(T, E), "g_out": r(T, D)}


def step_gemms(layers: list[dict]) -> None:
    """Forward (x @ W^T) and, per Linear, grad input (g @ W) and grad weight (g^T @ x)."""
    for m in layers:
        m["x"] @ m["w_in"].t()
        m["u"] @ m["w_x"].t()
        m["dt_low"] @ m["w_dt"].t()
        m["y"] @ m["w_out"].t()
        m["g_out"] @ m["w_out"]
        m["g_out"].t() @ m["y"]
        m["g_dt"] @ m["w_dt"]
        m["g_dt"].t() @ m["dt_low"]
        m["g_dbc"] @ m["w_x"]
        m["g_dbc"].t() @ m["u"]
        m["g_xz"] @ m["w_in"]
        m["g_xz"].t() @ m["x"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    import torch

    import cpu_bench
    import train_bench

    torch.set_num_threads(args.threads)
    T, fpt = args.length, cpu_bench.flops_per_token(D, LAYERS, STATE)
    layers = [layer_tensors(torch, T) for _ in range(LAYERS)]
    blas = cpu_bench.OpenBlasSgemm()
    spec = {"model_dir": train_bench.ensure_model(cpu_bench.DEFAULT_CACHE, "130m"), "threads": args.threads,
            "seqs": 1, "length": T, "shape": "130m", "reps": 3, "min_seconds": 3.0}
    print(f"{LAYERS * 12} GEMMs of a 1 x {T} step on the 130M shape ({fpt / 1e6:.1f} MFLOP/token forward), "
          f"{args.threads} threads, torch {torch.__version__}")
    print("| round | torch GEMMs s | torch GFLOP/s | sgemm GFLOP/s | inference forward s | efficiency ceiling | "
          "step / forward floor |")
    print("|---|---|---|---|---|---|---|")
    for r in range(args.rounds):
        step_gemms(layers)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            step_gemms(layers)
            best = min(best, time.perf_counter() - t)
        rate = blas.rate(T, D, 4 * D, args.threads)
        forward = min(train_bench.worker_infer(spec)["infer_s"])
        torch_rate = 3 * fpt * T / best / 1e9
        print(f"| {r + 1} | {best:.2f} | {torch_rate:.1f} | {rate:.1f} | {forward:.3f} | {torch_rate / rate:.2f} | "
              f"{best / forward:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
