"""CPU training speed and memory: mambaret.nn (our kernels) vs HF transformers' CPU path, same weights.

    python bench/train_bench.py [--threads 2] [--lengths 128,512] [--budget-s 600] [--out bench/results/train.md]
    python bench/train_bench.py --tiny --out /tmp/train.md     # proves the script at a tiny shape

A training step is forward + backward + AdamW step on a batch of token ids, with the retriever's
loss shape: the gradient enters at each sequence's last-token final-norm state (a fixed random
direction dotted with the normalised embedding, the same for both engines). Every point runs in
a fresh subprocess; its peak RSS (VmHWM) is read by the parent while it runs, so a point killed
for its time budget or for memory still reports the memory it reached.

Points, on the Mamba-130M shape (random weights, d 768, 24 layers) with `--threads` threads:
- ours and HF at batch 1 x L for each length (HF's CPU scan loops over tokens in Python and its
  backward is quadratic in length; a point over --budget-s or killed is reported as such);
- ours at batch 16 x 512 (HF cannot hold it);
- our inference forward (MambaEncoder, the C engine) on the same tokens, for the ratio of a
  training step (forward + backward) to an inference forward;
- the sgemm rate on in_proj's shape (scipy-openblas32, the BLAS both our forward and torch-free
  paths use), for the efficiency 3 x 179.3 MFLOP/token x training tokens/s / sgemm rate.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import cpu_bench  # noqa: E402
from cpu_bench import (VOCAB_ROWS, OpenBlasSgemm, _uptime,  # noqa: E402
                       flops_per_token, machine_description)
from llama_embed import bench_tokens, peak_rss_mib  # noqa: E402  (bench/peers, on the path through cpu_bench)

TOKEN_SEED = 11
DEFAULT_CACHE = os.environ.get("MAMBARET_BENCH_CACHE", os.path.expanduser("~/.cache/mambaret-bench"))
SHAPES = {"130m": (768, 24), "tiny": (64, 2)}


def ensure_model(cache: str, shape: str) -> str:
    if shape == "130m":  # the same checkpoint as cpu_bench.py's (same seed and shape)
        return cpu_bench.ensure_model(cache, shape)
    return cpu_bench.ensure_random_model(cache, f"train-{shape}", *SHAPES[shape])


# -- workers (each in its own subprocess) -------------------------------------------------------

def _use_checkout():
    if glob.glob(os.path.join(REPO, "mambaret", "_C*.so")):  # an in-place build of this checkout wins
        sys.path.insert(0, REPO)


def _step_timings(model, forward_last, tokens_per_step: int, spec: dict) -> dict:
    """Times forward + backward (no optimizer) and the full step (with AdamW) separately."""
    import torch

    _use_checkout()
    from mambaret.train import make_optimizer  # the trainer's AdamW (fused where torch has it), for both

    hidden = model.config.hidden_size
    direction = torch.nn.functional.normalize(torch.randn(hidden, generator=torch.Generator().manual_seed(0)), dim=0)
    optimizer = make_optimizer(model, lr=1e-5)

    def forward_backward():
        pooled = torch.nn.functional.normalize(forward_last(), dim=-1)
        (pooled @ direction).sum().backward()

    def step():
        optimizer.zero_grad(set_to_none=True)
        forward_backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    t = time.perf_counter()
    step()  # warm-up, and AdamW's state allocated
    first = time.perf_counter() - t
    fb, full = [], []
    deadline = time.perf_counter() + spec["min_seconds"]
    while len(full) < spec["reps"] or (time.perf_counter() < deadline and len(full) < 20):
        optimizer.zero_grad(set_to_none=True)
        t = time.perf_counter()
        forward_backward()
        fb.append(time.perf_counter() - t)
        t = time.perf_counter()
        step()
        full.append(time.perf_counter() - t)
    return {"train_tokens_per_s": tokens_per_step / min(full), "step_s": full, "forward_backward_s": fb,
            "first_step_s": first, "forward_backward_tokens_per_s": tokens_per_step / min(fb)}


def worker_ours(spec: dict) -> dict:
    _use_checkout()
    import torch

    torch.set_num_threads(spec["threads"])
    from mambaret.nn import MambaModel, last_token_embeddings

    model = MambaModel.from_pretrained(spec["model_dir"]).float().train()
    ids = bench_tokens(spec["seqs"], spec["length"], VOCAB_ROWS, TOKEN_SEED).astype(np.int64)
    tokens = torch.from_numpy(ids.reshape(-1))
    offsets = torch.arange(spec["seqs"] + 1, dtype=torch.int64) * spec["length"]

    def forward_last():
        return last_token_embeddings(model.forward_packed(tokens, offsets), offsets)

    result = _step_timings(model, forward_last, ids.size, spec)
    result.update(peak_rss_mib=peak_rss_mib(), torch=torch.__version__, torch_threads=torch.get_num_threads())
    return result


def worker_hf(spec: dict) -> dict:
    import torch
    from transformers import MambaModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(spec["threads"])
    model = MambaModel.from_pretrained(spec["model_dir"], dtype=torch.float32).train()
    ids = torch.from_numpy(bench_tokens(spec["seqs"], spec["length"], VOCAB_ROWS, TOKEN_SEED).astype(np.int64))

    def forward_last():
        return model(input_ids=ids, use_cache=False).last_hidden_state[:, -1]

    result = _step_timings(model, forward_last, ids.numel(), spec)
    import transformers

    result.update(peak_rss_mib=peak_rss_mib(), torch=torch.__version__, transformers=transformers.__version__)
    return result


def worker_infer(spec: dict) -> dict:
    """Our inference forward (the C engine) on the same tokens: the step-cost denominator."""
    _use_checkout()
    import mambaret as mr

    enc = mr.MambaEncoder.from_pretrained(spec["model_dir"], threads=spec["threads"], max_tokens=8192)
    ids = list(bench_tokens(spec["seqs"], spec["length"], VOCAB_ROWS, TOKEN_SEED))
    enc.encode(ids, batch_size=len(ids))
    times = []
    deadline = time.perf_counter() + spec["min_seconds"]
    while len(times) < spec["reps"] or (time.perf_counter() < deadline and len(times) < 50):
        t = time.perf_counter()
        enc.encode(ids, batch_size=len(ids))
        times.append(time.perf_counter() - t)
    rows = min(spec["seqs"] * spec["length"], 8192)
    d = SHAPES[spec["shape"]][0]
    return {"infer_tokens_per_s": spec["seqs"] * spec["length"] / min(times), "infer_s": times,
            "sgemm_tokens": rows, "sgemm_gflops": OpenBlasSgemm().rate(rows, d, 4 * d, spec["threads"]),
            "peak_rss_mib": peak_rss_mib()}


WORKERS = {"ours": worker_ours, "hf": worker_hf, "infer": worker_infer}


def run_worker(spec: dict, budget_s: float) -> dict:
    """One point in a fresh process, its VmHWM polled from here; kills it past the budget."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), OPENBLAS_NUM_THREADS=str(spec["threads"]))
    out_path = os.path.join(spec["scratch"], f"worker-{os.getpid()}-{time.time_ns()}.out")
    t0 = time.perf_counter()
    peak = 0.0
    with open(out_path, "w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        status = f"/proc/{proc.pid}/status"
        while proc.poll() is None:
            try:
                with open(status) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]) / 1024.0)
            except OSError:
                pass
            if time.perf_counter() - t0 > budget_s:
                proc.kill()
                proc.wait()
                os.unlink(out_path)
                return {"error": f"over the {budget_s:.0f} s budget", "peak_rss_seen_mib": peak,
                        "wall_s": time.perf_counter() - t0}
            time.sleep(0.2)
        out.seek(0)
        text = out.read()
    os.unlink(out_path)
    wall = time.perf_counter() - t0
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        why = "killed (out of memory?)" if proc.returncode == -9 else f"exit {proc.returncode}"
        tail = " | ".join(text.strip().splitlines()[-4:])
        return {"error": f"{why}: {tail}", "peak_rss_seen_mib": peak, "wall_s": wall}
    result = json.loads(lines[-1])
    result["wall_s"] = wall
    return result


# -- the run and its report ---------------------------------------------------------------------

def _fmt(x, spec=".0f"):
    return "—" if x is None else format(x, spec)


def write_report(path: str, meta: dict, rows: list[dict]) -> None:
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    d, layers = SHAPES[meta["shape"]]
    fpt = flops_per_token(d, layers)
    find = {(r["engine"], r["seqs"], r["length"]): r for r in rows}
    out = [f"# Training on the CPU: mambaret.nn vs HF transformers ({meta['shape']} shape)", "",
           f"`{meta['command']}`", "", f"{meta['date']}; {meta['machine'].get('model_name', '?')}, "
           f"{meta['threads']} threads; load before: `{meta['uptime_before']}`, after: `{meta['uptime_after']}`", "",
           "A step: forward + backward + AdamW (mambaret.train.make_optimizer: fused; clip 1.0) on batch x length random token ids, gradient entering at "
           "each sequence's last-token state. Efficiency = 3 x "
           f"{fpt / 1e6:.1f} MFLOP/token x our training tokens/s / sgemm GFLOP/s on in_proj's shape. "
           "Step / forward = our forward + backward time over our C engine's inference forward on the same tokens.",
           "",
           "| batch x length | ours train tok/s | HF train tok/s | ours / HF | ours peak RSS MiB | HF peak RSS MiB | "
           "HF / ours RSS | step / forward | sgemm GFLOP/s | efficiency |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for seqs, length in meta["points"]:
        ours, hf, infer = (find.get((e, seqs, length), {}) for e in ("ours", "hf", "infer"))
        ours_tps, hf_tps = ours.get("train_tokens_per_s"), hf.get("train_tokens_per_s")
        hf_cell = _fmt(hf_tps, ".1f") if hf_tps else (hf.get("error", "not run") if hf else "not run")
        ours_rss = ours.get("peak_rss_mib", ours.get("peak_rss_seen_mib"))
        hf_rss = hf.get("peak_rss_mib", hf.get("peak_rss_seen_mib"))
        if hf and "error" in hf and hf_rss:
            hf_rss_cell = f"≥ {hf_rss:.0f} (at stop)"
        else:
            hf_rss_cell = _fmt(hf_rss)
        ratio = None
        if ours.get("forward_backward_s") and infer.get("infer_s"):
            ratio = min(ours["forward_backward_s"]) / min(infer["infer_s"])
        eff = (3 * fpt * ours_tps / (infer["sgemm_gflops"] * 1e9)) if ours_tps and infer.get("sgemm_gflops") else None
        out.append(f"| {seqs} x {length} | {_fmt(ours_tps) if ours_tps else ours.get('error', '—')} | {hf_cell} | "
                   f"{_fmt(ours_tps / hf_tps if ours_tps and hf_tps else None, '.1f')} | {_fmt(ours_rss)} | "
                   f"{hf_rss_cell} | {_fmt(hf_rss / ours_rss if hf_rss and ours_rss else None, '.1f')} | "
                   f"{_fmt(ratio, '.2f')} | {_fmt(infer.get('sgemm_gflops'), '.1f')} | {_fmt(eff, '.2f')} |")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print("\n".join(out))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lengths", default="128,512", help="batch-1 lengths, ours and HF (default 128,512)")
    ap.add_argument("--big-batch", default="16x512", help="ours only, SEQSxLENGTH ('' for none; default 16x512)")
    ap.add_argument("--budget-s", type=float, default=600.0, help="time budget of each HF point (default 600)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=5.0)
    ap.add_argument("--only", default="ours,hf,infer")
    ap.add_argument("--tiny", action="store_true", help="a d 64, 2-layer model: proves the script in seconds")
    ap.add_argument("--cache", default=DEFAULT_CACHE)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "train.md"))
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[json.loads(args.worker)["engine"]](json.loads(args.worker))))
        return 0

    shape = "tiny" if args.tiny else "130m"
    model_dir = ensure_model(args.cache, shape)
    points = [(1, int(x)) for x in args.lengths.split(",") if x]
    if args.big_batch:
        seqs, length = (int(x) for x in args.big_batch.lower().split("x"))
        points.append((seqs, length))
    only = set(args.only.split(","))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    meta = {"command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, REPO)] +
                                             list(argv if argv is not None else sys.argv[1:])),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_description(), "threads": args.threads, "shape": shape, "points": points,
            "uptime_before": _uptime()}
    rows = []
    for seqs, length in points:
        base = {"model_dir": model_dir, "shape": shape, "threads": args.threads, "seqs": seqs, "length": length,
                "reps": args.reps, "min_seconds": args.min_seconds, "scratch": args.cache}
        engines = [e for e in ("infer", "ours", "hf") if e in only and not (e == "hf" and seqs > 1)]
        for engine in engines:
            budget = args.budget_s if engine == "hf" else max(args.budget_s, 3600.0)
            r = {"engine": engine, "seqs": seqs, "length": length, **run_worker({**base, "engine": engine}, budget)}
            print(f"[bench] {engine} {seqs}x{length}: " + json.dumps({k: v for k, v in r.items()
                                                                       if not isinstance(v, list)}), flush=True)
            rows.append(r)
    meta["uptime_after"] = _uptime()
    write_report(args.out, meta, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
