"""CPU encoding speed and memory: mambaret vs HF transformers vs llama.cpp, on the same weights and tokens.

    python bench/cpu_bench.py [--quick] [--out bench/results/cpu.md] [--only mambaret,hf,llama,sgemm,memory]

Builds seeded random-weight checkpoints with the exact shapes of state-spaces/mamba-130m-hf and
mamba-370m-hf once into a cache folder outside the repository (~/.cache/mambaret-bench, or
$MAMBARET_BENCH_CACHE), plus a GGUF of each for llama.cpp, and measures last-token embedding
throughput and peak RSS. Every configuration runs in a fresh subprocess so that its peak RSS
(VmHWM) is its own. Writes a Markdown report and a JSON file beside it.

Peers:
- hf: transformers' MambaModel on torch CPU (torch.set_num_threads = ours), batches of 1 x L and
  16 x L; configurations whose predicted time or memory is over budget are skipped and reported.
- llama: llama.cpp through llama-cpp-python, run with the Python of its own virtual environment
  (--llama-python, or $MAMBARET_BENCH_LLAMA_PYTHON); set up by bench/peers/setup_llama.sh. Never
  part of CI.
- sgemm: the BLAS rate on in_proj's shape (tokens x d by d x 2E) through scipy-openblas32, the
  BLAS mambaret uses; also measured inside every mambaret subprocess, after its timings.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import glob
import importlib.util
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PEERS = os.path.join(HERE, "peers")
sys.path.insert(0, PEERS)
from llama_embed import bench_tokens, current_rss_mib, peak_rss_mib  # noqa: E402  (numpy only)

VOCAB_ROWS = 50280
SHAPES = {
    # name: (hidden_size, layers); N 16, K 4, expand 2, dt_rank ceil(d/16), as the hub checkpoints
    "130m": (768, 24),
    "370m": (1024, 48),
    "mem-2l": (768, 2),  # the bounded-memory check's model
}
LENGTHS = [128, 512, 2048, 8192, 32768]
MEMORY_LENGTHS = [65536, 131072, 262144, 524288]
MIN_TOKENS_PER_CALL = 8192
WEIGHT_SEED = 1234
TOKEN_SEED = 7
DEFAULT_CACHE = os.environ.get("MAMBARET_BENCH_CACHE", os.path.expanduser("~/.cache/mambaret-bench"))
DEFAULT_LLAMA_PYTHON = os.environ.get("MAMBARET_BENCH_LLAMA_PYTHON", "/work/peers/llama-venv/bin/python")


def flops_per_token(d: int, layers: int, N: int = 16, expand: int = 2) -> float:
    """GEMM FLOPs per token of the backbone (in_proj, x_proj, dt_proj, out_proj): 179.3M for 130m."""
    E, R = expand * d, math.ceil(d / 16)
    return 2.0 * layers * (d * 2 * E + E * (R + 2 * N) + R * E + E * d)


def seqs_for(length: int) -> int:
    return max(1, MIN_TOKENS_PER_CALL // length)


# -- model cache ------------------------------------------------------------------------------

def _random_model_module():
    """mambaret/arch/random_model.py loaded by path: it needs only NumPy, not the compiled extension."""
    spec = importlib.util.spec_from_file_location("mambaret_random_model", os.path.join(REPO, "mambaret", "arch", "random_model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_model(cache: str, shape: str) -> str:
    d, layers = SHAPES[shape]
    return ensure_random_model(cache, shape, d, layers)


def ensure_random_model(cache: str, name: str, d: int, layers: int) -> str:
    """A seeded random checkpoint of d x layers, written once into cache/<name>-seed<seed>."""
    path = os.path.join(cache, f"{name}-seed{WEIGHT_SEED}")
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        print(f"[bench] writing random {name} checkpoint to {path}", flush=True)
        tmp = path + ".partial"
        _random_model_module().write_random_model(tmp, seed=WEIGHT_SEED, hidden_size=d, num_hidden_layers=layers,
                                                  vocab_size=VOCAB_ROWS)
        os.replace(tmp, path)
    return path


def ensure_gguf(model_dir: str, llama_python: str) -> str:
    path = model_dir + ".gguf"
    if not os.path.exists(path):
        print(f"[bench] writing {path}", flush=True)
        subprocess.run([llama_python, os.path.join(PEERS, "write_gguf.py"), model_dir, path + ".partial"], check=True)
        os.replace(path + ".partial", path)
    return path


# -- sgemm --------------------------------------------------------------------------------------

class OpenBlasSgemm:
    """cblas_sgemm of the scipy-openblas32 wheel, the BLAS that mambaret's CPU path loads."""

    def __init__(self):
        import scipy_openblas32

        self.path = os.path.join(scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so")
        self.lib = ctypes.CDLL(self.path)
        self.version = getattr(scipy_openblas32, "__version__", "?")
        self.lib.scipy_openblas_get_config.restype = ctypes.c_char_p
        f = self.lib.scipy_cblas_sgemm
        f.restype = None
        f.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_float,
                      ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_void_p,
                      ctypes.c_int]

    def config(self) -> str:
        return self.lib.scipy_openblas_get_config().decode()

    def rate(self, tokens: int, d: int, out: int, threads: int, min_seconds: float = 1.0) -> float:
        """GFLOP/s of X[tokens, d] @ W[out, d]^T (row-major, W transposed as in a Linear layer)."""
        self.lib.scipy_openblas_set_num_threads(threads)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((tokens, d), dtype=np.float32)
        w = rng.standard_normal((out, d), dtype=np.float32)
        c = np.empty((tokens, out), dtype=np.float32)

        def call():
            self.lib.scipy_cblas_sgemm(101, 111, 112, tokens, out, d, 1.0, x.ctypes.data, d, w.ctypes.data, d, 0.0,
                                       c.ctypes.data, out)

        call()
        best, spent, n = float("inf"), 0.0, 0
        while spent < min_seconds or n < 3:
            t = time.perf_counter()
            call()
            dt = time.perf_counter() - t
            best, spent, n = min(best, dt), spent + dt, n + 1
        return 2.0 * tokens * d * out / best / 1e9


# -- workers (each runs in its own subprocess) --------------------------------------------------

def _timed(fn, reps: int, min_seconds: float) -> list[float]:
    times = []
    while len(times) < reps or (sum(times) < min_seconds and len(times) < 50):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def worker_mambaret(spec: dict) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", str(spec["threads"]))
    rss0 = current_rss_mib()
    if glob.glob(os.path.join(REPO, "mambaret", "_C*.so")):  # an in-place build of this checkout wins
        sys.path.insert(0, REPO)
    import mambaret as mr

    t0 = time.perf_counter()
    enc = mr.MambaEncoder.from_pretrained(spec["model_dir"], threads=spec["threads"], max_tokens=spec["max_tokens"])
    load_s = time.perf_counter() - t0
    rss_loaded = current_rss_mib()
    tokens = bench_tokens(spec["seqs"], spec["length"], VOCAB_ROWS, TOKEN_SEED)
    ids = list(tokens)  # pre-tokenized input: one int32 array per document
    n = len(ids)
    enc.encode(ids[:1] if spec["length"] >= 8192 else ids, batch_size=n)  # warm-up
    times = _timed(lambda: enc.encode(ids, batch_size=n), spec["reps"], spec["min_seconds"])
    result = {"tokens_per_s": spec["length"] * n / min(times), "times_s": times, "load_s": load_s,
              "mambaret": f"{mr.__version__} ({os.path.dirname(mr.__file__)})",
              "rss_start_mib": rss0, "rss_loaded_mib": rss_loaded, "peak_rss_mib": peak_rss_mib()}
    try:
        result["config"] = mr.show_config(print_out=False)
    except Exception as exc:  # the report still stands without it
        result["config"] = f"show_config failed: {exc}"
    if spec.get("sgemm", True):
        d = spec["d"]
        rows = min(spec["length"] * n, spec["max_tokens"])
        blas = OpenBlasSgemm()
        result["sgemm_tokens"] = rows
        result["sgemm_gflops"] = blas.rate(rows, d, 4 * d, spec["threads"])
    return result


def worker_hf(spec: dict) -> dict:
    rss0 = current_rss_mib()
    import torch
    from transformers import MambaModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(spec["threads"])
    t0 = time.perf_counter()
    model = MambaModel.from_pretrained(spec["model_dir"], dtype=torch.float32).eval()
    probe = spec.get("probe_layers")
    all_layers = model.layers  # kept referenced: a probe's RSS still holds every layer's weights
    if probe:  # memory only: the scan's transients are per layer, so a few layers reach the full peak
        model.layers = all_layers[:probe]
    load_s = time.perf_counter() - t0
    rss_loaded = current_rss_mib()
    tokens = torch.from_numpy(bench_tokens(spec["seqs"], spec["length"], VOCAB_ROWS, TOKEN_SEED).astype(np.int64))

    def run():
        with torch.inference_mode():
            return model(input_ids=tokens, use_cache=False).last_hidden_state[:, -1].clone()

    with torch.inference_mode():  # warm-up on a short slice: allocator and thread pool, not the full cost
        model(input_ids=tokens[:1, :16], use_cache=False)
    times = _timed(run, spec["reps"], 0.0)
    speed_key = "probe_tokens_per_s" if probe else "tokens_per_s"
    return {speed_key: spec["length"] * spec["seqs"] / min(times), "times_s": times, "load_s": load_s,
            "rss_start_mib": rss0, "rss_loaded_mib": rss_loaded, "peak_rss_mib": peak_rss_mib(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def worker_sgemm(spec: dict) -> dict:
    blas = OpenBlasSgemm()
    rates = {str(t): blas.rate(t, spec["d"], 4 * spec["d"], spec["threads"]) for t in spec["token_counts"]}
    return {"sgemm_gflops": rates, "blas": f"scipy-openblas32 {blas.version}", "blas_config": blas.config(),
            "peak_rss_mib": peak_rss_mib()}


WORKERS = {"mambaret": worker_mambaret, "hf": worker_hf, "sgemm": worker_sgemm}


def run_worker(spec: dict, python: str = sys.executable, timeout: float | None = None) -> dict:
    """Runs one configuration in a fresh process; returns its result or {'error': ...}."""
    if spec["engine"] == "llama":
        cmd = [python, os.path.join(PEERS, "llama_embed.py"), "time", spec["gguf"], "--length", str(spec["length"]),
               "--seqs", str(spec["seqs"]), "--threads", str(spec["threads"]), "--reps", str(spec["reps"]),
               "--vocab", str(VOCAB_ROWS), "--seed", str(TOKEN_SEED)]
        env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    else:
        cmd = [python, os.path.abspath(__file__), "--worker", json.dumps(spec)]
        env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), OPENBLAS_NUM_THREADS=str(spec["threads"]))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail), "wall_s": wall}
    result = json.loads(lines[-1])
    result["wall_s"] = wall
    return result


# -- the run ------------------------------------------------------------------------------------

def machine_description() -> dict:
    info = {"nproc": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    try:
        info["nproc_cmd"] = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for key in ("model name", "cpu MHz", "cache size", "flags"):
            for line in text.splitlines():
                if line.startswith(key):
                    value = line.split(":", 1)[1].strip()
                    if key == "flags":
                        wanted = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                                  "avx512_bf16", "amx_tile")
                        value = " ".join(f for f in value.split() if f in wanted)
                    info[key.replace(" ", "_")] = value
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_total"] = f.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    info["load"] = os.getloadavg()
    return info


def available_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return float("inf")


def hf_memory_estimate_gib(d: int, layers: int, seqs: int, length: int) -> float:
    """transformers' CPU scan materialises exp(ΔA), ΔB and ΔB·u as (batch, E, L, N) fp32 tensors."""
    E, N = 2 * d, 16
    per_big = seqs * E * length * N * 4
    activations = seqs * length * E * 4 * 12
    weights = (VOCAB_ROWS * d + layers * (d * 2 * E + 4 * E * d)) * 4
    return (3 * per_big + activations + weights) / 2 ** 30


class Bench:
    def __init__(self, args):
        self.args = args
        self.results: list[dict] = []
        self.hf_speed: dict[tuple, float] = {}

    def log(self, row: dict):
        keys = ("engine", "model", "threads", "length", "seqs", "tokens_per_s", "peak_rss_mib", "skipped", "error")
        print("[bench] " + " ".join(f"{k}={row[k]:.1f}" if isinstance(row.get(k), float) else f"{k}={row.get(k)}"
                                    for k in keys if k in row), flush=True)
        self.results.append(row)
        self.save_json()

    def save_json(self):
        if self.args.out:
            with open(os.path.splitext(self.args.out)[0] + ".json", "w") as f:
                json.dump({"meta": self.meta, "results": self.results}, f, indent=1)

    def run(self):
        a = self.args
        self.meta = {"command": "python " + " ".join(shlex.quote(x) for x in [os.path.relpath(__file__, REPO)] + sys.argv[1:]),
                     "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_description(),
                     "uptime_before": _uptime()}
        print(f"[bench] {self.meta['command']}  load {self.meta['uptime_before']}", flush=True)
        models = {m: ensure_model(a.cache, m) for m in a.models}
        if "llama" in a.only:
            if not os.path.exists(a.llama_python):
                self.log({"engine": "llama.cpp", "error": f"no llama-cpp-python environment at {a.llama_python} "
                                                          f"(run bench/peers/setup_llama.sh)"})
                a.only = [x for x in a.only if x != "llama"]
            else:
                ggufs = {m: ensure_gguf(p, a.llama_python) for m, p in models.items()}
        reps = 1 if a.quick else 3
        for m in a.models:
            d, layers = SHAPES[m]
            for threads in a.threads:
                if "sgemm" in a.only:
                    counts = sorted({128, 512, 2048} | {min(L * seqs_for(L), a.max_tokens) for L in a.lengths})
                    r = run_worker({"engine": "sgemm", "d": d, "threads": threads, "token_counts": counts})
                    self.log({"engine": "sgemm", "model": m, "threads": threads, **r})
                for L in a.lengths:
                    n = seqs_for(L)
                    base = {"model": m, "model_dir": models[m], "d": d, "layers": layers, "threads": threads,
                            "length": L}
                    if "mambaret" in a.only:
                        spec = {**base, "engine": "mambaret", "seqs": n, "reps": reps, "max_tokens": a.max_tokens,
                                "min_seconds": 0.5 if a.quick else 2.0}
                        self.log({**spec, **run_worker(spec)})
                    if "llama" in a.only:
                        spec = {**base, "engine": "llama.cpp", "seqs": n, "gguf": ggufs[m],
                                "reps": 1 if (a.quick or L * n * layers >= 8192 * 48) else 2}
                        self.log({**spec, **run_worker({**spec, "engine": "llama"}, python=a.llama_python,
                                                       timeout=a.peer_budget_s * 3)})
                    if "hf" in a.only:
                        for hf_seqs in (1, 16):
                            self.run_hf({**base, "engine": "hf", "seqs": hf_seqs, "reps": 1})
        if "memory" in a.only:
            mdir = ensure_model(a.cache, "mem-2l")
            for threads in a.threads[-1:]:
                for L in a.memory_lengths:
                    spec = {"engine": "mambaret", "model": "mem-2l", "model_dir": mdir, "d": 768, "layers": 2,
                            "threads": threads, "length": L, "seqs": 1, "reps": 1, "max_tokens": a.max_tokens,
                            "min_seconds": 0.0, "sgemm": False}
                    self.log({**spec, "check": "bounded_memory", **run_worker(spec)})
        self.meta["uptime_after"] = _uptime()
        self.save_json()

    def run_hf(self, spec: dict):
        a = self.args
        key = (spec["model"], spec["threads"], spec["seqs"])
        tokens = spec["length"] * spec["seqs"]
        mem = hf_memory_estimate_gib(spec["d"], spec["layers"], spec["seqs"], spec["length"])
        limit = min(a.hf_mem_gib, 0.8 * available_gib())
        if mem > limit:
            self.log({**spec, "skipped": f"estimated {mem:.1f} GiB > {limit:.1f} GiB allowed"})
            return
        speed = self.hf_speed.get(key) or self.hf_speed.get((spec["model"], spec["threads"], 1))
        if speed:  # batch-1 speed is a pessimistic stand-in for a batch not yet measured
            predicted = tokens / speed * 1.3
            if predicted > a.peer_budget_s:
                reason = f"predicted {predicted:.0f} s > {a.peer_budget_s:.0f} s budget"
                if spec["seqs"] == 1:  # still measure its peak memory, on the first layers only
                    probe = {**spec, "probe_layers": 2}
                    self.log({**probe, "skipped": reason, **run_worker(probe, timeout=a.peer_budget_s * 3)})
                else:
                    self.log({**spec, "skipped": reason})
                return
        r = run_worker(spec, timeout=a.peer_budget_s * 3)
        if "tokens_per_s" in r:
            self.hf_speed[key] = r["tokens_per_s"]
        self.log({**spec, **r})


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# -- report -------------------------------------------------------------------------------------

def _fmt(x, spec=".0f"):
    return "—" if x is None else format(x, spec)


def hf_probe_rss(rows: list[dict], model: str, threads: int, length: int) -> float | None:
    """Peak RSS of HF's memory-only run (the first layers of a batch-1 forward), when one was made."""
    for r in rows:
        if r.get("engine") == "hf" and r.get("probe_layers") and r.get("model") == model and \
                r.get("threads") == threads and r.get("length") == length and "peak_rss_mib" in r:
            return r["peak_rss_mib"]
    return None


def write_report(path: str):
    with open(os.path.splitext(path)[0] + ".json") as f:
        data = json.load(f)
    meta, rows = data["meta"], data["results"]
    ok = [r for r in rows if "tokens_per_s" in r and r.get("check") != "bounded_memory"]

    def pick(engine, model, threads, length):
        cands = [r for r in ok if r["engine"] == engine and r["model"] == model and r["threads"] == threads
                 and r["length"] == length]
        return max(cands, key=lambda r: r["tokens_per_s"]) if cands else None

    def why_missing(engine, model, threads, length):
        for r in rows:
            if r.get("engine") == engine and r.get("model") == model and r.get("threads") == threads \
                    and r.get("length") == length and ("skipped" in r or "error" in r):
                return "skipped: " + r["skipped"] if "skipped" in r else "error: " + r["error"][:80]
        return "not run"

    out = ["# CPU encoding benchmark", "",
           f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ",
           f"Load before: `{meta.get('uptime_before')}`  ", f"Load after: `{meta.get('uptime_after')}`", "",
           "Machine: " + ", ".join(f"{k}: {v}" for k, v in meta["machine"].items() if k != "load"), "",
           "Random weights with the exact shapes of state-spaces/mamba-130m-hf and mamba-370m-hf, the same "
           "weights (safetensors for mambaret and HF, a GGUF written from them for llama.cpp) and the same "
           "token ids for every engine. Tokens/s is the best timed call; peak RSS is the whole subprocess "
           "(VmHWM), weights included. HF: the better of batch 1 x L and 16 x L. Efficiency = GEMM "
           "FLOP/token x mambaret tokens/s / sgemm rate on in_proj's shape (measured in the same process).", ""]
    models = sorted({r["model"] for r in ok if r["model"] in ("130m", "370m")} |
                    {r.get("model") for r in rows if r.get("model") in ("130m", "370m")})
    for model in models:
        d, layers = SHAPES[model]
        fpt = flops_per_token(d, layers)
        out += [f"## {model} shape (d {d}, {layers} layers, {fpt / 1e6:.1f} MFLOP/token)", "",
                "| threads | length | seqs/call (mambaret, llama.cpp) | mambaret tok/s | RSS MiB | llama.cpp tok/s | RSS MiB | "
                "HF tok/s (batch) | RSS MiB | vs llama | vs HF | sgemm GFLOP/s | efficiency |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        threads_seen = sorted({r["threads"] for r in rows if r.get("model") == model and "threads" in r})
        notes = []
        for t in threads_seen:
            for L in LENGTHS:
                m, ll, hf = pick("mambaret", model, t, L), pick("llama.cpp", model, t, L), pick("hf", model, t, L)
                hf_probe = hf_probe_rss(rows, model, t, L)
                if not (m or ll or hf):
                    continue
                eff = m["tokens_per_s"] * fpt / (m["sgemm_gflops"] * 1e9) if m and m.get("sgemm_gflops") else None
                out.append("| " + " | ".join([
                    str(t), str(L), str(seqs_for(L)),
                    _fmt(m and m["tokens_per_s"]) if m else why_missing("mambaret", model, t, L),
                    _fmt(m and m["peak_rss_mib"]),
                    _fmt(ll["tokens_per_s"]) if ll else why_missing("llama.cpp", model, t, L),
                    _fmt(ll and ll["peak_rss_mib"]),
                    f"{hf['tokens_per_s']:.0f} ({hf['seqs']} x L)" if hf else why_missing("hf", model, t, L),
                    _fmt(hf["peak_rss_mib"]) if hf else (f"{hf_probe:.0f} (2-layer probe)" if hf_probe else "—"),
                    f"{m['tokens_per_s'] / ll['tokens_per_s']:.1f}x" if m and ll else "—",
                    f"{m['tokens_per_s'] / hf['tokens_per_s']:.1f}x" if m and hf else "—",
                    _fmt(m and m.get("sgemm_gflops"), ".1f"), _fmt(eff, ".2f")]) + " |")
            m512, m32k = pick("mambaret", model, t, 512), pick("mambaret", model, t, 32768)
            if m512 and m32k:
                ratio = m512["tokens_per_s"] / m32k["tokens_per_s"]
                notes.append(f"Linearity ({t} thread(s)): time/token at 32768 = {ratio:.2f} x time/token at 512.")
            hf32k = pick("hf", model, t, 32768)
            hf32k_rss = hf32k["peak_rss_mib"] if hf32k else hf_probe_rss(rows, model, t, 32768)
            if m32k and hf32k_rss:
                notes.append(f"Peak RSS at 32768 ({t} thread(s)): mambaret {m32k['peak_rss_mib']:.0f} MiB, "
                             f"HF {hf32k_rss:.0f} MiB ({hf32k_rss / m32k['peak_rss_mib']:.1f}x)"
                             f"{'' if hf32k else ', HF from a 2-layer probe'}.")
        out += [""] + [f"- {n}" for n in notes] + [""]
    skipped = [r for r in rows if "skipped" in r or "error" in r]
    if skipped:
        out += ["## Skipped or failed configurations", ""]
        for r in skipped:
            what = f"{r.get('engine')} {r.get('model', '')} threads={r.get('threads', '')} L={r.get('length', '')} " \
                   f"seqs={r.get('seqs', '')}"
            out.append(f"- {what}: {r.get('skipped') or r.get('error')}")
        out.append("")
    sg = [r for r in rows if r.get("engine") == "sgemm" and "sgemm_gflops" in r]
    if sg:
        out += ["## sgemm on in_proj's shape (tokens x d by d x 4d)", "", "| model | threads | " +
                " | ".join(f"{k} tok" for k in sg[0]["sgemm_gflops"]) + " |",
                "|---|---|" + "---|" * len(sg[0]["sgemm_gflops"])]
        for r in sg:
            out.append(f"| {r['model']} | {r['threads']} | " + " | ".join(f"{v:.1f}" for v in r["sgemm_gflops"].values())
                       + " |")
        out += ["", f"BLAS: {sg[0].get('blas')} ({sg[0].get('blas_config')})", ""]
    mem = [r for r in rows if r.get("check") == "bounded_memory"]
    if mem:
        out += ["## Bounded memory: one document, 2-layer d=768 model", "", "| tokens | peak RSS MiB | RSS after load MiB | tok/s |",
                "|---|---|---|---|"]
        for r in mem:
            out.append(f"| {r['length']} | {_fmt(r.get('peak_rss_mib'))} | {_fmt(r.get('rss_loaded_mib'))} | "
                       f"{_fmt(r.get('tokens_per_s')) if 'tokens_per_s' in r else r.get('error', '')} |")
        sized = [r for r in mem if "peak_rss_mib" in r]
        if len(sized) >= 2:
            growth = sized[-1]["peak_rss_mib"] - sized[0]["peak_rss_mib"]
            out.append(f"\nPeak RSS growth from {sized[0]['length']} to {sized[-1]['length']} tokens: {growth:+.0f} MiB "
                       f"(the document goes in as one int32 array: 2 MiB at the longest; the benchmark's own "
                       f"int64 token generation adds a transient 4 MiB).")
        out.append("")
    ll = next((r for r in rows if r.get("engine") == "llama.cpp" and "llama_cpp_python" in r), None)
    if ll:
        out += ["## Peer versions", "", f"- llama-cpp-python {ll['llama_cpp_python']}; llama.cpp system info: "
                f"`{ll.get('system_info', '')}`"]
    hfr = next((r for r in rows if r.get("engine") == "hf" and "torch" in r), None)
    if hfr:
        try:
            import transformers
            tv = transformers.__version__
        except ImportError:
            tv = "?"
        out += [f"- torch {hfr['torch']}, transformers {tv} (CPU: the sequential scan in Python)"]
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"[bench] wrote {path}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="130m only, fewer repetitions and lengths up to 8192")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results", "cpu.md"))
    ap.add_argument("--only", default="mambaret,hf,llama,sgemm,memory",
                    help="comma-separated subset of mambaret,hf,llama,sgemm,memory")
    ap.add_argument("--models", help="comma-separated: 130m,370m (default both; --quick: 130m)")
    ap.add_argument("--threads", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--lengths", help="comma-separated sequence lengths (default 128,512,2048,8192,32768)")
    ap.add_argument("--memory-lengths", help="bounded-memory document lengths (default 64k..512k)")
    ap.add_argument("--max-tokens", type=int, default=8192, help="mambaret's micro-batch size")
    ap.add_argument("--cache", default=DEFAULT_CACHE, help="where the random checkpoints and GGUFs are kept")
    ap.add_argument("--llama-python", default=DEFAULT_LLAMA_PYTHON)
    ap.add_argument("--peer-budget-s", type=float, default=180.0,
                    help="skip an HF configuration predicted to take longer than this")
    ap.add_argument("--hf-mem-gib", type=float, default=14.0,
                    help="skip HF configurations estimated above this (or above 80%% of MemAvailable)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the Markdown from the JSON beside --out")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(WORKERS[spec["engine"]](spec)))
        return 0
    if args.report_only:
        write_report(args.out)
        return 0
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(args.only) - {"mambaret", "hf", "llama", "sgemm", "memory"}
    if unknown:
        ap.error(f"unknown --only entries: {sorted(unknown)}")
    args.models = args.models.split(",") if args.models else (["130m"] if args.quick else ["130m", "370m"])
    args.threads = [int(x) for x in args.threads.split(",")] if args.threads else [1, 2]
    args.lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else \
        ([128, 512, 2048, 8192] if args.quick else LENGTHS)
    args.memory_lengths = [int(x) for x in args.memory_lengths.split(",")] if args.memory_lengths else \
        (MEMORY_LENGTHS[:2] if args.quick else MEMORY_LENGTHS)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    os.makedirs(args.cache, exist_ok=True)
    Bench(args).run()
    if args.out:
        write_report(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
