"""GPU throughput of the mambaret CUDA engine against HF transformers, with hardware ceilings.

For each model shape (random weights in the real 130M/370M/790M shapes) and sequence length,
times one packed forward pass of `--tokens` tokens (batch = tokens / length, which fills an
H100), end to end from host token ids to pooled embeddings on the GPU; runs HF transformers'
MambaModel on the same GPU at the same batch; and measures the copy bandwidth and the bf16
GEMM rate with torch as ceilings. Writes a Markdown table with the command and the device.

    python bench/gpu_bench.py                      # all shapes, lengths 512 and 8192, bf16
    python bench/gpu_bench.py --shapes 130m --lengths 512 --no-hf
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MAMBA_SSM_NOTE = ("mamba-ssm's selective-scan kernel was not measured: the GPU machine has no network, so its "
                  "source cannot be fetched and built there")


def timed(fn, sync, repeats):
    fn()  # warm-up: workspace, cuBLAS heuristics
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def ceilings(torch):
    n = 1 << 28  # 512 MiB of bf16 copied
    a = torch.empty(n, dtype=torch.bfloat16, device="cuda")
    b = torch.empty_like(a)
    t = timed(lambda: b.copy_(a), torch.cuda.synchronize, 5)
    bandwidth = 2 * a.numel() * 2 / t
    del a, b
    m = 8192
    x = torch.randn(m, m, dtype=torch.bfloat16, device="cuda")
    y = torch.randn(m, m, dtype=torch.bfloat16, device="cuda")
    t = timed(lambda: x @ y, torch.cuda.synchronize, 5)
    return bandwidth, 2 * m ** 3 / t


def flops_per_token(cfg):
    d, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    E, N, R = cfg["intermediate_size"], cfg["state_size"], cfg["time_step_rank"]
    per_layer = 2 * (d * 2 * E + E * (R + 2 * N) + R * E + E * d)
    return layers * per_layer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="130m,370m,790m")
    parser.add_argument("--lengths", default="512,8192")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--tokens", type=int, default=1 << 18, help="tokens per forward pass")
    parser.add_argument("--max-tokens", type=int, default=1 << 16, help="micro-batch size of our engine")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-hf", action="store_true", help="skip HF transformers")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "gpu.md"))
    args = parser.parse_args(argv)

    import torch

    import mambaret as mr
    from mambaret.arch.random_model import write_random_model

    if not mr.cuda_available():
        sys.exit("CUDA is not usable here: " + (mr.encoding.cuda._load_cuda_module()[1] or "no GPU"))
    torch.backends.cuda.matmul.allow_tf32 = False
    device_name = torch.cuda.get_device_name(0)
    bandwidth, gemm_rate = ceilings(torch)
    print(f"{device_name}: copy {bandwidth / 1e9:.0f} GB/s, bf16 GEMM {gemm_rate / 1e12:.0f} TFLOP/s", flush=True)

    rows, info = [], None
    for shape in args.shapes.split(","):
        path = os.path.join(HERE, ".cache", f"random-{shape}")
        if not os.path.exists(os.path.join(path, "model.safetensors")):
            write_random_model(path, seed=0, shape=shape)
        enc = mr.MambaEncoder.from_pretrained(path, device="cuda", dtype=args.dtype, max_tokens=args.max_tokens)
        info = enc.model.info
        cfg = enc.dims
        fpt = flops_per_token(dict(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                                   intermediate_size=cfg.intermediate_size, state_size=cfg.state_size,
                                   time_step_rank=cfg.time_step_rank))
        hf = None
        if not args.no_hf:
            from transformers import MambaModel

            hf = MambaModel.from_pretrained(path, torch_dtype=getattr(torch, args.dtype)).cuda().eval()
        for length in (int(x) for x in args.lengths.split(",")):
            batch = max(1, args.tokens // length)
            rng = np.random.default_rng(0)
            ids = rng.integers(2, 50000, (batch, length)).astype(np.int32)
            tokens = ids.reshape(-1)
            offsets = np.arange(0, batch * length + 1, length, dtype=np.int64)
            t = timed(lambda: enc.model.forward(tokens, offsets, max_tokens=args.max_tokens, convert_to="dlpack"),
                      torch.cuda.synchronize, args.repeats)
            ours = tokens.size / t
            hf_rate, hf_note = None, ""
            if hf is not None:
                input_ids = torch.from_numpy(ids.astype(np.int64)).cuda()
                try:
                    with torch.no_grad():
                        th = timed(lambda: hf(input_ids).last_hidden_state[:, -1], torch.cuda.synchronize, 1)
                    hf_rate = tokens.size / th
                except torch.cuda.OutOfMemoryError:
                    hf_note = "out of memory"
                    torch.cuda.empty_cache()
            row = dict(shape=shape, length=length, batch=batch, ours=ours, hf=hf_rate, hf_note=hf_note,
                       roofline=gemm_rate / fpt)
            rows.append(row)
            print(f"{shape:>5} L={length:<5} B={batch:<4} ours {ours / 1e6:7.3f} Mtok/s  HF "
                  f"{(hf_rate or 0) / 1e6:7.3f} Mtok/s {hf_note}  GEMM bound {row['roofline'] / 1e6:.2f} Mtok/s",
                  flush=True)
        del enc, hf
        torch.cuda.empty_cache()

    command = "python " + " ".join([os.path.relpath(__file__, os.path.dirname(HERE))] + (argv or sys.argv[1:]))
    lines = ["# GPU throughput", "", f"Command: `{command}`  ", f"Device: {device_name} ({info['description']})  ",
             f"Compute dtype: {args.dtype}; micro-batch {args.max_tokens} tokens; {args.tokens} tokens per forward; "
             f"best of {args.repeats}; random weights in the real shapes.  ",
             f"Ceilings (torch): copy {bandwidth / 1e9:.0f} GB/s, bf16 GEMM {gemm_rate / 1e12:.0f} TFLOP/s.  ",
             f"{MAMBA_SSM_NOTE}.", "",
             "| shape | length | batch | mambaret tok/s | HF transformers tok/s | ratio | GEMM-bound tok/s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        hf = f"{r['hf']:,.0f}" if r["hf"] else (r["hf_note"] or "not run")
        ratio = f"{r['ours'] / r['hf']:.1f}x" if r["hf"] else "-"
        lines.append(f"| {r['shape']} | {r['length']} | {r['batch']} | {r['ours']:,.0f} | {hf} | {ratio} | "
                     f"{r['roofline']:,.0f} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(MAMBA_SSM_NOTE)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
