"""Default thread count on a busy machine and parallel speed-up on a quiet one.

    python bench/threads_bench.py --baseline HEAD~1          # the full run (take it on a quiet machine)
    python bench/threads_bench.py --quick --baseline HEAD~1  # tiny sizes: proves the script runs

Three measurements, each configuration in its own subprocess, configurations alternating
round by round so that a drift of the machine's load touches all of them alike:

(a) busy: one busy-loop process per core is started, then a small model (d 128, 2 layers, random
    weights, the GPT-NeoX tokenizer) encodes the first 2,000 Vaswani documents with the default
    thread count and with threads=1. Passes when the default's median time is at most 10 % over
    threads=1's. With --baseline, the previous build is measured the same way for comparison.
(b) quiet, speed-up: the Mamba-130M shape (d 768, 24 layers, random weights) encodes 16 x 512
    token ids with threads=1 and threads=2; passes at 2 threads >= 1.6 x 1 thread (best runs).
(c) quiet, against the previous build (--baseline: a git revision, built once into the cache,
    or a directory holding a built checkout): tokens/s with the default thread count on the
    130M shape at length 512 and on the encode job (`python3 -m mambaret encode MODEL
    doc-text.trec` with a random d 256, 4-layer model on all of Vaswani, the README's main job
    before the default model); passes at >= 95 % of the previous build (best runs).

Writes a Markdown report and a JSON file (--out, default bench/results/threads.md) with the
command, the machine, its load before and after, and the OpenMP variables in the environment.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
TOKENIZER = os.path.join(SHARED_DATA, "tokenizers", "gpt-neox-20b.json")
VASWANI_DOCS = os.path.join(SHARED_DATA, "vaswani", "doc-text.trec")
DEFAULT_CACHE = os.environ.get("MAMBARET_BENCH_CACHE", os.path.expanduser("~/.cache/mambaret-bench"))
VOCAB_ROWS = 50280
WEIGHT_SEED = 1234
TOKEN_SEED = 7

FULL = dict(busy_docs=2000, shape=(768, 24), seqs=16, length=512, main_limit=None, rounds=5, reps=3)
QUICK = dict(busy_docs=100, shape=(64, 2), seqs=2, length=64, main_limit=100, rounds=1, reps=1)


# -- set-up -------------------------------------------------------------------------------------

def _random_model_module():
    """mambaret/arch/random_model.py loaded by path: it needs only NumPy, not the compiled extension."""
    spec = importlib.util.spec_from_file_location("mambaret_random_model", os.path.join(REPO, "mambaret", "arch", "random_model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_model(cache: str, name: str, hidden_size: int, layers: int, tokenizer: str | None) -> str:
    path = os.path.join(cache, f"{name}-seed{WEIGHT_SEED}")
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        print(f"[bench] writing random model {name} to {path}", flush=True)
        tmp = path + ".partial"
        shutil.rmtree(tmp, ignore_errors=True)
        _random_model_module().write_random_model(tmp, seed=WEIGHT_SEED, hidden_size=hidden_size,
                                                  num_hidden_layers=layers, vocab_size=VOCAB_ROWS,
                                                  tokenizer_json=tokenizer)
        os.replace(tmp, path)
    return path


def _is_built(code_dir: str) -> bool:
    return bool(glob.glob(os.path.join(code_dir, "mambaret", "_C*.so")))


def ensure_baseline(baseline: str, cache: str) -> tuple[str, str]:
    """(directory of a built checkout, description) for a directory or a git revision."""
    if os.path.isdir(baseline):
        if not _is_built(baseline):
            raise SystemExit(f"{baseline}: no built extension (run setup.py build_ext --inplace there)")
        return os.path.abspath(baseline), os.path.abspath(baseline)
    sha = subprocess.run(["git", "-C", REPO, "rev-parse", "--verify", baseline + "^{commit}"], capture_output=True,
                         text=True, check=True).stdout.strip()
    path = os.path.join(cache, f"baseline-{sha[:12]}")
    if not _is_built(path):
        print(f"[bench] building {baseline} ({sha[:12]}) into {path}", flush=True)
        tmp = path + ".partial"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        archive = subprocess.run(["git", "-C", REPO, "archive", sha], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=tmp, check=True,
                       env=dict(os.environ, MAMBARET_CUDA="0"), stdout=subprocess.DEVNULL)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    return path, f"{baseline} ({sha[:12]})"


def start_busy_loops(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        p.kill()
    for p in processes:
        p.wait()


# -- workers (each in its own subprocess) ---------------------------------------------------------

def _timed(fn, reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def worker(spec: dict) -> dict:
    sys.path.insert(0, spec["code_dir"])
    import mambaret as mr

    if spec["kind"] == "main_job":  # the encode job, as its command line runs it
        import contextlib
        import io

        from mambaret.app.cli import main

        # the model and corpus named, so that every build (with or without a default model) runs the same job
        argv = ["encode", spec["model_dir"], VASWANI_DOCS, "--quiet"] + (
            ["--limit", str(spec["limit"])] if spec["limit"] else [])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = main(argv)
        found = re.search(r"in ([\d.]+) s: ([\d,]+) tokens/s", out.getvalue())
        if rc != 0 or not found:
            raise SystemExit(f"mambaret encode failed ({rc}): {out.getvalue()}")
        return {"seconds": [float(found.group(1))], "tokens_per_s": [float(found.group(2).replace(",", ""))],
                "code": os.path.dirname(mr.__file__)}
    enc = mr.MambaEncoder.from_pretrained(spec["model_dir"], threads=spec["threads"], max_tokens=8192)
    if spec["kind"] == "vaswani":
        from mambaret.evaluation.datasets import load_trec_docs

        inputs = list(load_trec_docs(VASWANI_DOCS).values())[:spec["docs"]]
        tokens = sum(len(x) for x in enc.tokenize(inputs))
        enc.encode(inputs[:100])  # warm-up: workspace, BLAS, OpenMP team
        times = _timed(lambda: enc.encode(inputs), spec["reps"])
    else:  # token ids of the benchmark shape
        import numpy as np

        rng = np.random.default_rng(TOKEN_SEED)
        ids = list(rng.integers(2, VOCAB_ROWS, size=(spec["seqs"], spec["length"]), dtype=np.int64).astype(np.int32))
        tokens = spec["seqs"] * spec["length"]
        enc.encode(ids, batch_size=len(ids))
        times = _timed(lambda: enc.encode(ids, batch_size=len(ids)), spec["reps"])
    return {"seconds": times, "tokens_per_s": [tokens / t for t in times], "threads": enc.threads,
            "code": os.path.dirname(mr.__file__)}


def run_worker(spec: dict) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"worker failed: {shlex.join(cmd)}\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def alternate(configs: dict[str, dict], rounds: int) -> dict[str, list[dict]]:
    """Runs every configuration once per round, in turn; per configuration the workers' results."""
    results: dict[str, list[dict]] = {name: [] for name in configs}
    for r in range(rounds):
        for name, spec in configs.items():
            res = run_worker(spec)
            results[name].append(res)
            print(f"[bench] round {r + 1}/{rounds} {name}: " + ", ".join(f"{s:.3f} s" for s in res["seconds"]), flush=True)
    return results


def summary(runs: list[dict]) -> dict:
    seconds = [s for r in runs for s in r["seconds"]]
    rates = [x for r in runs for x in r["tokens_per_s"]]
    return {"median_s": statistics.median(seconds), "best_s": min(seconds), "best_tokens_per_s": max(rates),
            "median_tokens_per_s": statistics.median(rates), "runs": len(seconds)}


# -- the three measurements -------------------------------------------------------------------------

def measure(args, sizes: dict) -> dict:
    os.makedirs(args.cache, exist_ok=True)
    small = ensure_model(args.cache, "threads-small-d128-l2", 128, 2, TOKENIZER)
    d, layers = sizes["shape"]
    shape = ensure_model(args.cache, f"threads-d{d}-l{layers}", d, layers, None)
    main_job_model = ensure_model(args.cache, "encode-job-d256-l4", 256, 4, TOKENIZER)
    codes = {"current": REPO}
    report: dict = {"sizes": sizes, "parts": {}}
    if args.baseline:
        codes["baseline"], report["baseline"] = ensure_baseline(args.baseline, args.cache)
    parts = args.parts.split(",")

    if "busy" in parts:
        configs = {}
        for code, code_dir in codes.items():
            for threads in (None, 1):
                configs[f"{code} threads={threads or 'default'}"] = dict(
                    kind="vaswani", code_dir=code_dir, model_dir=small, docs=sizes["busy_docs"], threads=threads,
                    reps=sizes["reps"])
        loops = start_busy_loops(args.busy_procs)
        try:
            time.sleep(0.5)
            runs = alternate(configs, sizes["rounds"])
        finally:
            stop(loops)
        stats = {name: summary(r) for name, r in runs.items()}
        ratio = stats["current threads=default"]["median_s"] / stats["current threads=1"]["median_s"]
        report["parts"]["busy"] = {"busy_loops": args.busy_procs, "stats": stats, "default_over_one": ratio,
                                   "pass": ratio <= 1.10, "runs": runs}

    if "speedup" in parts:
        configs = {f"current threads={t}": dict(kind="tokens", code_dir=REPO, model_dir=shape, seqs=sizes["seqs"],
                                                length=sizes["length"], threads=t, reps=sizes["reps"]) for t in (1, 2)}
        runs = alternate(configs, sizes["rounds"])
        stats = {name: summary(r) for name, r in runs.items()}
        ratio = stats["current threads=2"]["best_tokens_per_s"] / stats["current threads=1"]["best_tokens_per_s"]
        report["parts"]["speedup"] = {"stats": stats, "two_over_one": ratio, "pass": ratio >= 1.6, "runs": runs}

    if "baseline" in parts and "baseline" in codes:
        for job in ("shape", "main_job"):
            configs = {}
            for code, code_dir in codes.items():
                if job == "shape":
                    configs[code] = dict(kind="tokens", code_dir=code_dir, model_dir=shape, seqs=sizes["seqs"],
                                         length=sizes["length"], threads=None, reps=sizes["reps"])
                else:
                    configs[code] = dict(kind="main_job", code_dir=code_dir, model_dir=main_job_model,
                                         limit=sizes["main_limit"])
            runs = alternate(configs, sizes["rounds"])
            stats = {name: summary(r) for name, r in runs.items()}
            ratio = stats["current"]["best_tokens_per_s"] / stats["baseline"]["best_tokens_per_s"]
            report["parts"][f"baseline_{job}"] = {"stats": stats, "current_over_baseline": ratio,
                                                  "pass": ratio >= 0.95, "runs": runs}
    return report


# -- report ------------------------------------------------------------------------------------------

def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def write_report(report: dict, out: str) -> None:
    lines = ["# Threads: default thread count on a busy machine, speed-up on a quiet one", "",
             f"Command: `{report['command']}`  ", f"Date: {report['date']}  ",
             f"Machine: {report['machine']}, {report['cpus']} CPUs  ",
             f"Load before: `{report['load_before']}`  ", f"Load after: `{report['load_after']}`  ",
             f"Code: {report['revision']}" + (f"; previous build: {report['baseline']}" if "baseline" in report else ""),
             f"OpenMP environment: {report['openmp_env'] or 'none set'}", ""]
    if report.get("quick"):
        lines += ["**Quick run (tiny sizes): proves the script runs; its numbers mean nothing.**", ""]
    parts = report["parts"]

    def table(stats: dict, unit: str) -> list[str]:
        rows = ["| configuration | runs | median | best |", "|---|---|---|---|"]
        for name, s in stats.items():
            if unit == "s":
                rows.append(f"| {name} | {s['runs']} | {s['median_s']:.3f} s | {s['best_s']:.3f} s |")
            else:
                rows.append(f"| {name} | {s['runs']} | {s['median_tokens_per_s']:,.0f} tok/s | "
                            f"{s['best_tokens_per_s']:,.0f} tok/s |")
        return rows

    verdict = {True: "PASS", False: "FAIL"}
    if "busy" in parts:
        p = parts["busy"]
        lines += [f"## (a) Busy machine ({p['busy_loops']} busy loops), small model (d 128, 2 layers), "
                  f"{report['sizes']['busy_docs']} Vaswani documents", ""] + table(p["stats"], "s")
        lines += ["", f"Default / threads=1 (median time): {p['default_over_one']:.3f} (limit 1.10): "
                      f"**{verdict[p['pass']]}**", ""]
    if "speedup" in parts:
        p = parts["speedup"]
        d, layers = report["sizes"]["shape"]
        lines += [f"## (b) Quiet machine: speed-up, d {d}, {layers} layers, {report['sizes']['seqs']} x "
                  f"{report['sizes']['length']} tokens", ""] + table(p["stats"], "tok/s")
        lines += ["", f"2 threads / 1 thread (best tok/s): {p['two_over_one']:.2f} (at least 1.6): "
                      f"**{verdict[p['pass']]}**", ""]
    for job, title in (("shape", "the benchmark shape"), ("main_job", "the encode job")):
        p = parts.get(f"baseline_{job}")
        if p:
            lines += [f"## (c) Quiet machine: against the previous build, {title} (default threads)", ""]
            lines += table(p["stats"], "tok/s")
            lines += ["", f"Current / previous (best tok/s): {p['current_over_baseline']:.3f} (at least 0.95): "
                          f"**{verdict[p['pass']]}**", ""]
    with open(out, "w") as f:
        f.write("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one round: proves the script runs")
    ap.add_argument("--baseline", help="the previous build: a git revision (built once into the cache) or a "
                                       "directory with a built checkout; without it part (c) is skipped")
    ap.add_argument("--parts", default="busy,speedup,baseline", help="any of busy,speedup,baseline")
    ap.add_argument("--busy-procs", type=int, default=len(os.sched_getaffinity(0)),
                    help="busy-loop processes for part (a) (default: one per core)")
    ap.add_argument("--rounds", type=int, help="alternating rounds per measurement (default 5, quick 1)")
    ap.add_argument("--cache", default=DEFAULT_CACHE, help="random checkpoints and baseline builds")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "threads.md"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if not os.path.isfile(VASWANI_DOCS):
        raise SystemExit(f"{VASWANI_DOCS} not found: the benchmark needs ../shared/data beside the repository")
    sizes = dict(QUICK if args.quick else FULL)
    if args.rounds:
        sizes["rounds"] = args.rounds
    report = {"command": shlex.join([os.path.relpath(sys.argv[0], REPO)] + (argv if argv is not None else sys.argv[1:])),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": platform.processor() or platform.machine(), "cpus": len(os.sched_getaffinity(0)),
              "quick": args.quick, "load_before": _uptime(),
              "revision": subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True,
                                         text=True).stdout.strip(),
              "openmp_env": ", ".join(f"{k}={v}" for k, v in sorted(os.environ.items())
                                      if k.startswith(("OMP_", "GOMP_", "KMP_")))}
    report.update(measure(args, sizes))
    report["load_after"] = _uptime()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_report(report, args.out)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(report, f, indent=1)
    print(open(args.out).read())
    return 0 if all(p["pass"] for p in report["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
