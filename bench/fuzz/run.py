"""Runs the fuzz targets with atheris (libFuzzer), each for a given time, and reports iterations.

    python bench/fuzz/run.py --seconds 600                     # every target, 10 minutes each
    python bench/fuzz/run.py safetensors flat_index --seconds 30
    python bench/fuzz/run.py config --seconds 30 -- -max_len=8192    # after --: libFuzzer flags
    bench/fuzz/build_instrumented.sh && python bench/fuzz/run.py --instrumented --seconds 600

Each target runs in its own process, starting from a copy of its committed seed corpus
(``bench/fuzz/corpus/<target>``; what libFuzzer adds goes to the copy). ``--instrumented`` runs
against the extension built with ``-fsanitize=fuzzer-no-link,address`` (a copy of the tree
in build-fuzz/src, see build_instrumented.sh) under atheris' AddressSanitizer runtime, so that coverage and memory
errors reach into the C. A finding leaves its input as ``crash-*`` in ``--artifacts``; replay
one with ``python bench/fuzz/run.py TARGET --replay FILE``. Prints a JSON line per target:
iterations, seconds, and whether it ended clean; exit status 1 if any did not.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
# libFuzzer dictionaries: the tokens a format is made of, so mutations reach past the parser's first checks
DICTIONARIES = {"json": ("safetensors", "config", "tokenizer", "model_folder", "beir_corpus", "beir_queries", "token_ids", "train_jsonl"),
                "trec": ("trec_topics", "trec_docs", "trec_qrels", "trec_run", "beir_qrels")}
INSTRUMENTED_SRC = os.path.join(ROOT, "build-fuzz", "src")


def child(target: str, libfuzzer_args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["mambaret"]):
        import mambaret  # noqa: F401 - instrumented for coverage
        import mambaret.arch.config, mambaret.arch.weights, mambaret.arch.loader  # noqa: E401,F401
        import mambaret.evaluation.datasets, mambaret.encoding.encoder, mambaret.search.index  # noqa: E401,F401
        import mambaret.encoding.tokenization  # noqa: F401
        if target == "train_jsonl":  # its package loads torch: only where it is fuzzed
            import mambaret.train.data  # noqa: F401
    sys.path.insert(0, HERE)
    import targets

    print(f"INFO: mambaret._C from {mambaret._C.__file__}", file=sys.stderr)

    def one_input(data: bytes) -> None:
        targets.run_one(target, data)

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    atheris.Fuzz()


def asan_preload() -> str:
    import atheris

    return os.path.join(atheris.path(), "asan_with_fuzzer.so")


def run_target(target: str, seconds: int, instrumented: bool, artifacts: str, extra: list[str]) -> dict:
    env = dict(os.environ)
    python_path = [ROOT]
    if instrumented:
        if not glob.glob(os.path.join(INSTRUMENTED_SRC, "mambaret", "_C*.so")):
            raise SystemExit("no instrumented build: run bench/fuzz/build_instrumented.sh first")
        python_path = [INSTRUMENTED_SRC]
        env["LD_PRELOAD"] = asan_preload()
        # CPython's own allocations are not ours to judge; leaks at exit are not findings here
        env["ASAN_OPTIONS"] = "detect_leaks=0:allocator_may_return_null=1"
    env["PYTHONPATH"] = os.pathsep.join(python_path + [env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    os.makedirs(artifacts, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        corpus = os.path.join(work, target)
        seeds = os.path.join(CORPUS, target)
        shutil.copytree(seeds, corpus) if os.path.isdir(seeds) else os.makedirs(corpus)
        env["TMPDIR"] = work  # the target's scratch files go where they are removed afterwards
        dictionary = [f"-dict={os.path.join(HERE, 'dicts', name + '.dict')}"
                      for name, users in DICTIONARIES.items() if target in users]
        cmd = [sys.executable, os.path.abspath(__file__), "--child", target, "--", *dictionary,
               f"-max_total_time={seconds}", "-rss_limit_mb=4096", "-timeout=20",
               f"-artifact_prefix={os.path.join(artifacts, target)}-", *extra, corpus]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    log = done.stderr
    runs = re.findall(r"Done (\d+) runs in (\d+) second", log)
    result = {"target": target, "instrumented": instrumented, "seconds": seconds,
              "iterations": int(runs[-1][0]) if runs else None, "exit": done.returncode,
              "clean": done.returncode == 0 and bool(runs)}
    if not result["clean"]:
        result["log_tail"] = log[-3000:]
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("targets", nargs="*", help="default: all")
    ap.add_argument("--seconds", type=int, default=60, help="per target")
    ap.add_argument("--instrumented", action="store_true")
    ap.add_argument("--jobs", type=int, default=1, help="targets run at the same time")
    ap.add_argument("--artifacts", default=os.path.join(ROOT, "build-fuzz", "artifacts"))
    ap.add_argument("--replay", help="run one input file through the target, without libFuzzer")
    ap.add_argument("--json", help="append the results to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:  # libFuzzer's own arguments (and the corpus folder) follow "--"
        argv, extra = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    else:
        extra = []
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, extra)
        return 0
    sys.path.insert(0, HERE)
    import targets

    names = args.targets or list(targets.TARGETS)
    unknown = [n for n in names if n not in targets.TARGETS]
    if unknown:
        ap.error(f"unknown targets {unknown}; known: {sorted(targets.TARGETS)}")
    if args.replay:
        with open(args.replay, "rb") as f:
            targets.run_one(names[0], f.read())
        print("no finding")
        return 0
    ok = True

    def one(name: str) -> dict:
        return run_target(name, args.seconds, args.instrumented, args.artifacts, extra)

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for r in pool.map(one, names):  # in order, as each finishes
            ok = ok and r["clean"]
            print(json.dumps(r), flush=True)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as f:
                    f.write(json.dumps(r) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
