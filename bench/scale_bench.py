"""Scale-out benchmark: compressed flat indexes, FAISS approximate indexes, Ray vs in-process encoding.

    python bench/scale_bench.py                          # 1M x 768 random vectors, 1000 queries, k=10
    python bench/scale_bench.py --tiny                   # 20k x 64, 50 queries: proves the script works
    python bench/scale_bench.py --model DIR --corpus docs.trec --queries topics.trec   # + real recall curve
    python bench/scale_bench.py --sections encode        # only Ray vs in-process encoding

Sections (--sections, comma-separated; default all that have their inputs):

- ``search``: float FlatIndex, BinaryFlatIndex, Int8FlatIndex on random unit vectors (no structure:
  speed and memory only). Each index is built and searched in its own child process with
  OMP_NUM_THREADS / OPENBLAS_NUM_THREADS = --threads; reported: best-of --repeat time for the
  whole query batch, queries/s, speed-up over float, the index's own bytes, and the child's
  anonymous resident memory (RssAnon: the float vectors used for rescoring are a memory-mapped
  .npy whose pages are file-backed, counted apart as their file size).
- ``faiss``: IVF-Flat, IVF-PQ and HNSW through ``mambaret.build_index``, in one table with the
  float, binary + rescoring and int8 + rescoring flat indexes: recall@10 against exact search,
  build time, search time, memory; on the real embeddings when --model/--corpus/--queries are
  given, else on the random vectors.
- ``recall``: with --model/--corpus/--queries, real embeddings: recall@10 of binary and int8
  search against exact float search as the rescoring depth (multiplier x k) grows.
- ``encode``: documents/s of the in-process encoder with --threads threads against Ray on this
  machine (a local Ray with --threads CPUs, --threads actors of 1 CPU), same texts, same model
  (--model, else a seeded random d=256, 4-layer model), including Ray's actor start-up.

Numbers depend on the machine and its load; the header records both (uptime before and after).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.path.join(ROOT, "..", "shared", "data")
sys.path.insert(0, ROOT)


def rss_anon_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return -1


def make_random(folder: str, n: int, dim: int, nq: int, seed: int = 0):
    """Unit vectors in folder/vectors.npy and queries.npy, written in chunks (cached)."""
    vec_path, q_path = os.path.join(folder, f"vectors-{n}x{dim}.npy"), os.path.join(folder, f"queries-{nq}x{dim}.npy")
    if not (os.path.exists(vec_path) and os.path.exists(q_path)):
        rng = np.random.default_rng(seed)
        out = np.lib.format.open_memmap(vec_path + ".tmp.npy", mode="w+", dtype=np.float32, shape=(n, dim))
        for start in range(0, n, 1 << 16):
            block = rng.standard_normal((min(1 << 16, n - start), dim), dtype=np.float32)
            out[start:start + block.shape[0]] = block / np.linalg.norm(block, axis=1, keepdims=True)
        out.flush()
        del out
        os.replace(vec_path + ".tmp.npy", vec_path)
        q = rng.standard_normal((nq, dim), dtype=np.float32)
        np.save(q_path, q / np.linalg.norm(q, axis=1, keepdims=True))
    return vec_path, q_path


# ------------------------------------------------------------------ child: one index, one process

def child_search(method: str, vec_path: str, q_path: str, k: int, repeat: int, multiplier: int) -> dict:
    import mambaret as mr
    from mambaret.search.quantization import calibrate_ranges

    vectors = np.load(vec_path, mmap_mode="r")
    queries = np.load(q_path)
    n, dim = vectors.shape
    base = rss_anon_bytes()
    chunk = 1 << 16
    if method == "float":
        index = mr.FlatIndex(dim)
    elif method.startswith("binary"):
        index = mr.BinaryFlatIndex(dim)
    else:
        index = mr.Int8FlatIndex(dim, ranges=calibrate_ranges(vectors, sample_size=min(n, 100_000)))
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        index.add(np.asarray(vectors[start:start + chunk]))
    if isinstance(index, mr.FlatIndex) and index._size < index._buffer.shape[0]:
        index._buffer = index._buffer[:index._size].copy()  # drop spare capacity before measuring
    build = time.perf_counter() - t0
    rescore = method.endswith("+rescore")
    if rescore:
        index.set_rescore_vectors(vec_path)
    search = (lambda: index.search(queries, k)) if method == "float" else \
        (lambda: index.search(queries, k, rescore_multiplier=multiplier if rescore else None))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        _, ids = search()
        times.append(time.perf_counter() - t0)
    stored = index._buffer[:index._size].nbytes
    return {"method": method, "n": n, "dim": dim, "nq": len(queries), "build_s": build, "search_s": min(times),
            "index_bytes": stored, "rss_anon_bytes": rss_anon_bytes() - base,
            "rescore_file_bytes": os.path.getsize(vec_path) if rescore else 0, "ids": ids.tolist()}


def child_faiss(kind: str, vec_path: str, q_path: str, k: int, params: dict) -> dict:
    import mambaret as mr

    base = rss_anon_bytes()
    built = mr.build_index(vec_path, kind, queries=np.load(q_path), k=k, **params)
    return {"kind": kind, "params": built.params, "recall": built.recall, "build_s": built.build_seconds,
            "search_s": built.search_seconds, "nq": built.n_queries, "rss_anon_bytes": rss_anon_bytes() - base}


def run_child(args, payload: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(payload)], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"child {payload} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def recall(found, exact, k) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, exact)]))


def mib(x) -> str:
    return f"{x / 2**20:,.1f}"


# ------------------------------------------------------------------ sections

def section_search(args, folder, lines):
    vec_path, q_path = make_random(folder, args.n, args.dim, args.nq)
    results = {}
    # the methods take turns round after round (each round starting one method later) and each keeps
    # its best: this machine's speed drifts by more than the differences measured, and a method run
    # right after the float one measured slower than alone
    methods = ("float", "binary", "binary+rescore", "int8", "int8+rescore")
    for r in range(args.rounds):
        for method in methods[r % len(methods):] + methods[:r % len(methods)]:
            got = run_child(args, {"section": "search", "method": method, "vec": vec_path, "q": q_path,
                                   "k": args.k, "repeat": args.repeat, "multiplier": args.multiplier})
            print(f"  {method}: {got['search_s']:.3f} s", file=sys.stderr)
            if method not in results or got["search_s"] < results[method]["search_s"]:
                results[method] = got
    results = {m: results[m] for m in methods}
    base = results["float"]
    lines += [f"### Flat search, {args.n:,} x {args.dim} random unit vectors, {args.nq} queries, k={args.k}, "
              f"{args.threads} threads (rescoring depth {args.multiplier} x k; best of {args.rounds} rounds of "
              f"{args.repeat})", "",
              "| index | search s | queries/s | speed-up vs float | index MiB | RssAnon MiB | float bytes / index bytes "
              "| rescore file MiB (mmap) | recall@10 vs float |",
              "|---|---|---|---|---|---|---|---|---|"]
    for method, r in results.items():
        lines.append(f"| {method} | {r['search_s']:.3f} | {r['nq'] / r['search_s']:,.0f} | "
                     f"{base['search_s'] / r['search_s']:.1f}x | {mib(r['index_bytes'])} | {mib(r['rss_anon_bytes'])} | "
                     f"{base['index_bytes'] / r['index_bytes']:.1f}x | {mib(r['rescore_file_bytes'])} | "
                     f"{recall(np.array(r['ids']), np.array(base['ids']), args.k):.3f} |")
    lines += ["", "Random vectors have no structure: the recall column shows only that the codes lose "
              "information; see the real-embedding curve for retrieval recall.", ""]


def section_faiss(args, folder, lines):
    """FAISS's approximate indexes beside our flat ones in one table: on the real embeddings when
    --model/--corpus/--queries are given (the case that matters), else on the random vectors."""
    real = bool(args.model and args.corpus and args.queries)
    vec_path, q_path = real_embeddings(args, folder) if real else make_random(folder, args.n, args.dim, args.nq)
    n, dim = np.load(vec_path, mmap_mode="r").shape
    nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))
    m = max(d for d in range(1, max(dim // 8, 1) + 1) if dim % d == 0)
    configs = [("ivf_flat", {"nlist": nlist, "nprobe": p}) for p in (8, 32)]
    configs += [("ivf_pq", {"nlist": nlist, "nprobe": 32, "m": m, "nbits": 8 if n >= 10_000 else 4})]
    configs += [("hnsw", {"M": 32, "efConstruction": 200 if not args.tiny else 40, "efSearch": ef}) for ef in (64, 256)]
    what = f"{n:,} real documents embedded by {args.model}" if real else f"{n:,} x {dim} random unit vectors"
    lines += [f"### Flat and FAISS indexes, {what}, {np.load(q_path).shape[0]} queries, k={args.k}, "
              f"{args.threads} threads", "",
              "| index | parameters | recall@10 vs exact | build s | search ms/query | RssAnon MiB |",
              "|---|---|---|---|---|---|"]
    flat = [("float", "exact", 0), ("binary+rescore", "float rescoring of 40 x k", 40),
            ("int8+rescore", "float rescoring of 4 x k", 4)]
    exact = None
    for method, described, multiplier in flat:
        r = run_child(args, {"section": "search", "method": method, "vec": vec_path, "q": q_path, "k": args.k,
                             "repeat": args.repeat, "multiplier": multiplier})
        exact = np.array(r["ids"]) if exact is None else exact
        lines.append(f"| {method.split('+')[0]} flat | {described} | {recall(np.array(r['ids']), exact, args.k):.3f} | "
                     f"{r['build_s']:.1f} | {r['search_s'] / r['nq'] * 1e3:.3f} | {mib(r['rss_anon_bytes'])} |")
        print(f"  {method}: {r['search_s']:.3f} s", file=sys.stderr)
    for kind, params in configs:
        r = run_child(args, {"section": "faiss", "kind": kind, "vec": vec_path, "q": q_path, "k": args.k,
                             "params": {**params, "threads": args.threads}})
        print(f"  {kind} {params}: recall {r['recall']:.3f}", file=sys.stderr)
        lines.append(f"| {kind} | {', '.join(f'{a}={b}' for a, b in r['params'].items())} | {r['recall']:.3f} | "
                     f"{r['build_s']:.1f} | {r['search_s'] / r['nq'] * 1e3:.3f} | {mib(r['rss_anon_bytes'])} |")
    lines += ["", "Flat rows: the search of the whole query batch (best of --repeat) divided by the queries; "
              "FAISS rows: build_index's own timing of the same queries. RssAnon: the child's anonymous memory "
              "after building and searching (the FAISS rows include build_index's exact flat index for recall). "
              + ("" if real else "Random vectors are the hardest case for IVF and HNSW (no clusters)."), ""]


def _read_texts(path: str, limit=None):
    from mambaret.evaluation import datasets
    if path.endswith(".jsonl"):
        corpus = datasets.load_beir_corpus(path)
        ids, texts = list(corpus), [datasets.document_text(d) for d in corpus.values()]
    elif path.endswith((".trec", ".xml", ".sgml")):
        docs = datasets.load_trec_docs(path)
        ids, texts = list(docs), list(docs.values())
    else:
        with open(path, encoding="utf-8") as f:
            texts = [line.strip() for line in f if line.strip()]
        ids = [str(i) for i in range(len(texts))]
    return ids[:limit], texts[:limit]


def real_embeddings(args, folder):
    """Normalised embeddings of --corpus (up to --limit documents) and --queries by --model, as
    .npy files in the cache; reused while model, corpus, limit and queries are the same."""
    import mambaret as mr
    from mambaret.arch.paths import resolve_model_path

    model_dir = resolve_model_path(args.model)
    key = {"model": os.path.abspath(model_dir), "corpus": os.path.abspath(args.corpus), "limit": args.limit,
           "queries": os.path.abspath(args.queries),
           "mtime": max(os.path.getmtime(os.path.join(model_dir, f)) for f in os.listdir(model_dir))}
    emb_path, q_path = os.path.join(folder, "real-embeddings.npy"), os.path.join(folder, "real-queries.npy")
    key_path = os.path.join(folder, "real-embeddings.json")
    if os.path.exists(key_path) and os.path.exists(q_path):
        with open(key_path) as f:
            if json.load(f) == key:
                return emb_path, q_path
    enc = mr.MambaEncoder.from_pretrained(args.model, threads=args.threads)
    _, docs = _read_texts(args.corpus, args.limit)
    if args.queries.endswith(".jsonl"):
        queries = list(mr.evaluation.datasets.load_beir_queries(args.queries).values())
    else:
        queries = list(mr.evaluation.datasets.load_trec_topics(args.queries).values())
    from mambaret.encoding.corpus import encode_corpus
    encode_corpus(enc, docs, len(docs), emb_path, batch_size=32, normalize_embeddings=True)
    np.save(q_path, enc.encode_query(queries, normalize_embeddings=True))
    with open(key_path, "w") as f:
        json.dump(key, f)
    return emb_path, q_path


def section_recall(args, folder, lines):
    import mambaret as mr
    from mambaret.search.quantization import calibrate_ranges

    emb_path, q_path = real_embeddings(args, folder)
    q = np.load(q_path)
    vectors = np.load(emb_path, mmap_mode="r")
    exact = mr.FlatIndex.from_npy(emb_path, mmap=True).search(q, args.k)[1]
    binary, int8 = mr.BinaryFlatIndex(vectors.shape[1]), mr.Int8FlatIndex(vectors.shape[1],
                                                                          ranges=calibrate_ranges(vectors))
    for index in (binary, int8):
        index.add(np.asarray(vectors))
        index.set_rescore_vectors(emb_path)
    depths = [0, 1, 2, 4, 10, 20, 40, 100]
    lines += [f"### Recall@{args.k} against exact float search, {vectors.shape[0]:,} real documents, {len(q)} queries "
              f"({args.model})", "", "| rescoring depth (x k) | " + " | ".join(str(d) if d else "none" for d in depths)
              + " |", "|---|" + "---|" * len(depths)]
    for name, index in (("binary + float rescoring", binary), ("int8 + float rescoring", int8)):
        cells = [recall(index.search(q, args.k, rescore_multiplier=d or None)[1], exact, args.k) for d in depths]
        lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    lines.append("")


def section_encode(args, folder, lines):
    import mambaret as mr
    import mambaret.encoding.distributed as mrd
    import ray

    model = args.model
    if model is None:
        from mambaret.arch.random_model import write_random_model
        model = os.path.join(folder, "random-model")
        if not os.path.exists(model):
            write_random_model(model, seed=0, tokenizer_json=os.path.join(SHARED, "tokenizers", "gpt-neox-20b.json"),
                               hidden_size=256, num_hidden_layers=4)
    corpus = args.corpus or os.path.join(SHARED, "vaswani", "doc-text.trec")
    ids, texts = _read_texts(corpus, args.encode_docs)
    enc = mr.MambaEncoder.from_pretrained(model, threads=args.threads)
    tokens = sum(len(t) for t in enc.tokenize(texts))
    t0 = time.perf_counter()
    ref = enc.encode(texts, batch_size=32)
    local_s = time.perf_counter() - t0
    ray.init(num_cpus=args.threads, log_to_driver=False, include_dashboard=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = ray.data.from_items([{"id": i, "text": t} for i, t in zip(ids, texts)],
                                 override_num_blocks=4 * args.threads)
        t0 = time.perf_counter()
        out = mrd.encode(ds, model, batch_size=32, num_actors=args.threads, cpus_per_actor=1)
        parts, first_s = [], None
        for batch in out.iter_batches(batch_format="numpy", batch_size=32):
            parts.append(batch["embedding"])
            first_s = time.perf_counter() - t0 if first_s is None else first_s
        ray_s = time.perf_counter() - t0
        got = np.concatenate(parts)
    finally:
        ray.shutdown()
    err = float(np.abs(got - ref).max())
    lines += [f"### Encoding {len(texts):,} documents ({tokens:,} tokens), {args.threads} cores, model {model}", "",
              "| engine | seconds | docs/s | tokens/s | vs in-process |", "|---|---|---|---|---|",
              f"| in-process MambaEncoder, {args.threads} threads | {local_s:.2f} | {len(texts) / local_s:,.1f} | "
              f"{tokens / local_s:,.0f} | 1.00 |",
              f"| Ray Data, {args.threads} actors x 1 CPU (incl. actor start-up) | {ray_s:.2f} | "
              f"{len(texts) / ray_s:,.1f} | {tokens / ray_s:,.0f} | {local_s / ray_s:.2f} |", "",
              f"Ray's first batch arrived {first_s:.1f} s after the call (actor start-up and model load, in "
              f"every call; the local cluster's own start, ray.init, is not counted). "
              f"Largest difference between the two sets of embeddings: {err:.2e}.", ""]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--sections", default="search,faiss,recall,encode")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--nq", type=int, default=1000)
    parser.add_argument("-k", "--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="search section: the methods in turn this many times")
    parser.add_argument("--multiplier", type=int, default=4, help="rescoring depth (x k) in the search table")
    parser.add_argument("--tiny", action="store_true", help="20k x 64, 50 queries, 1 repeat, 400 docs to encode")
    parser.add_argument("--model", help="model folder: real embeddings for the recall curve, and the encode model")
    parser.add_argument("--corpus", help="corpus for --model (TREC, BEIR corpus.jsonl, or lines)")
    parser.add_argument("--queries", help="queries for the recall curve (TREC topics or BEIR queries.jsonl)")
    parser.add_argument("--limit", type=int, default=None, help="documents of --corpus for the recall curve")
    parser.add_argument("--encode-docs", type=int, default=4000, help="documents for the encode section")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "mambaret-scale-bench"))
    parser.add_argument("--output", help="also write the markdown here (e.g. bench/results/scale.md)")
    args = parser.parse_args()
    if args.child:
        payload = json.loads(args.child)
        if payload["section"] == "search":
            result = child_search(payload["method"], payload["vec"], payload["q"], payload["k"], payload["repeat"],
                                  payload["multiplier"])
        else:
            result = child_faiss(payload["kind"], payload["vec"], payload["q"], payload["k"], payload["params"])
        print(json.dumps(result))
        return
    if args.tiny:
        args.n, args.dim, args.nq, args.repeat, args.encode_docs = 20_000, 64, 50, 1, 400
    os.makedirs(args.cache, exist_ok=True)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines = ["## Scale benchmark", "", "```", "python " + " ".join(sys.argv), platform.platform(),
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", f"before: {uptime}", "```", ""]
    sections = args.sections.split(",")
    for name in sections:
        if name == "recall" and not (args.model and args.corpus and args.queries):
            # the faiss section then runs on the random vectors
            lines += ["(recall curve skipped: it needs --model, --corpus and --queries)", ""]
            continue
        print(f"{name} ...", file=sys.stderr)
        {"search": section_search, "faiss": section_faiss, "recall": section_recall,
         "encode": section_encode}[name](args, args.cache, lines)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines += ["```", f"after: {uptime}", "```"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
