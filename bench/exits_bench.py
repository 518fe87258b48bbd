"""Layer exits and Matryoshka dims of a model: speed, quality, and adaptive depth.

    flock /work/bench.lock python3 bench/exits_bench.py all --out bench/results/exits.json
    python3 bench/exits_bench.py chart --json bench/results/exits.json --png bench/results/exits.png

- identical: encode(exit_layer=n_layer, truncate_dim=d) against encode() on Vaswani's documents,
  bit for bit, normalised and not.
- speed: documents/s at every exit on Vaswani's documents (texts in, embeddings out: tokenization
  included), exits in alternating order round by round, so that other work on the machine
  spreads over all of them; the ratio to the full depth is taken within each round.
- quality: nDCG@10 for every (layers, dims) pair on the model's dev pairs (pair i's passage is
  query i's one relevant passage among all passages) and on Vaswani (which reports; it chooses
  nothing), with BM25 and RRF fusion (model + BM25) on Vaswani.
- teacher: the teacher's own dev nDCG@10 at every width, as it is and on its principal axes.
- adaptive: depth per text (DYNAMAX-style): each text stops at the first exit k >= 2 whose
  embedding agrees with exit k-1's (cosine >= t), else runs every layer. Measured on the dev pairs
  from every text's embeddings at every exit; its speed is the engine's cost model fitted on the
  fixed exits (seconds = tokens x (a + b x layers)), with no charge for the agreement test or for
  repacking a micro-batch, so it is an upper bound on what an implementation would reach.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

import mambaret as mr  # noqa: E402
from mambaret.encoding.encoder import l2_normalize_rows  # noqa: E402
from mambaret.evaluation.metrics import evaluate  # noqa: E402

SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")
DEV_PAIRS = os.path.join(SHARED, "default_model", "pairs.dev.jsonl")
VASWANI = os.path.join(SHARED, "vaswani")
THRESHOLDS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)


def _encoder(model: str, threads: int):
    import warnings

    warnings.filterwarnings("ignore", message=r".* is not one this model was trained for")
    return mr.MambaEncoder.from_pretrained(model, threads=threads)


def _dims(d: int) -> list[int]:
    return [d, d // 2, d // 4, d // 8]


def _truncated(emb: np.ndarray, dim: int) -> np.ndarray:
    """encode(truncate_dim=dim, normalize_embeddings=True) from full-width rows."""
    out = np.ascontiguousarray(emb[:, :dim])
    l2_normalize_rows(out)
    return out


def ndcg_per_query(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Dev pairs: query i's one relevant passage is passage i."""
    scores = q @ p.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    run = {str(i): {str(j): float(scores[i, j]) for j in row} for i, row in enumerate(top)}
    values = evaluate(run, {str(i): {str(i): 1} for i in range(len(q))}, ["ndcg@10"], per_query=True)
    return np.array([values[str(i)]["ndcg@10"] for i in range(len(q))])


def _run(q: np.ndarray, p: np.ndarray, qids, dids, k=1000):
    scores = q @ p.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return {qid: {dids[j]: float(scores[i, j]) for j in row} for i, (qid, row) in enumerate(zip(qids, top))}


def _dev_pairs(limit=None):
    rows = [json.loads(line) for line in open(DEV_PAIRS, encoding="utf-8")][:limit]
    return [r["query"] for r in rows], [r["positive"] for r in rows]


def _vaswani():
    from mambaret.search.retrieval import load_collection

    return load_collection(VASWANI)


def cmd_identical(args, result):
    enc = _encoder(args.model, args.threads)
    c = _vaswani()
    texts = [c.docs[i] for i in list(c.docs)[:args.identical_docs]]
    n, d = enc.dims.num_hidden_layers, enc.dims.hidden_size
    same = {}
    for normalize in (False, True):
        a = enc.encode_document(texts, normalize_embeddings=normalize, show_progress_bar=False)
        b = enc.encode_document(texts, normalize_embeddings=normalize, show_progress_bar=False, exit_layer=n,
                                truncate_dim=d)
        same[f"normalize={normalize}"] = bool(np.array_equal(a, b))
    result["identical"] = {"documents": len(texts), **same}
    print(f"identical: {result['identical']}", flush=True)


def _speed(model: str, threads: int, texts: list[str], rounds: int, chunk: int) -> dict:
    enc = _encoder(model, threads)
    n = enc.dims.num_hidden_layers
    tokens = sum(len(x) for x in enc.tokenize(texts))
    enc.encode_document(texts[:200], show_progress_bar=False)  # warm the workspace and the BLAS
    layers = list(range(1, n + 1))
    seconds = {k: [] for k in layers}
    for r in range(rounds):
        spent = dict.fromkeys(layers, 0.0)
        # every exit on each chunk back to back, in alternating order: a change in the machine's
        # load (it is shared) falls on all exits alike, and the ratios are taken within a round
        for c, start in enumerate(range(0, len(texts), chunk)):
            part = texts[start:start + chunk]
            for k in (layers if (r + c) % 2 == 0 else layers[::-1]):
                began = time.perf_counter()
                enc.encode_document(part, show_progress_bar=False, exit_layer=k, normalize_embeddings=True)
                spent[k] += time.perf_counter() - began
        for k in layers:
            seconds[k].append(spent[k])
        print(f"threads {threads}, round {r + 1}: " + ", ".join(f"{k}: {len(texts) / spent[k]:.1f} docs/s"
                                                                 for k in layers), flush=True)
    ratios = {k: [seconds[n][i] / seconds[k][i] for i in range(rounds)] for k in layers}
    return {
        "documents": len(texts), "tokens": tokens, "rounds": rounds, "chunk": chunk, "threads": enc.threads,
        "simd": mr._C.build_info().get("simd"), "blas": enc.model.blas,
        "docs_per_s": {k: len(texts) / float(np.median(seconds[k])) for k in layers},
        "speedup_median": {k: float(np.median(ratios[k])) for k in layers},
        "speedup_min": {k: float(np.min(ratios[k])) for k in layers},
        "speedup_max": {k: float(np.max(ratios[k])) for k in layers},
        "seconds": {k: seconds[k] for k in layers},
    }


def cmd_speed(args, result):
    c = _vaswani()
    texts = [c.docs[i] for i in list(c.docs)[:args.speed_docs]]
    for threads in args.threads_list:
        key = "speed" if threads == args.threads else f"speed_threads{threads}"
        result[key] = _speed(args.model, threads, texts, args.rounds, args.chunk)
        print(f"threads {threads}: speed-up over the full depth {result[key]['speedup_median']}", flush=True)


def _exit_embeddings(enc, queries, docs):
    n = enc.dims.num_hidden_layers
    q = {k: enc.encode_query(queries, exit_layer=k, normalize_embeddings=True, show_progress_bar=False)
         for k in range(1, n + 1)}
    p = {k: enc.encode_document(docs, exit_layer=k, normalize_embeddings=True, show_progress_bar=False)
         for k in range(1, n + 1)}
    return q, p


def adaptive_choice(emb: dict[int, np.ndarray], threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Each row's stopping exit and its embedding: the first k >= 2 with cos(e_k, e_{k-1}) >= t."""
    n = max(emb)
    rows = len(emb[n])
    chosen = np.full(rows, n)
    for k in range(n - 1, 1, -1):  # from deep to shallow, so the first agreeing exit wins
        agree = np.einsum("ij,ij->i", emb[k], emb[k - 1]) >= threshold
        chosen[agree] = k
    out = np.stack([emb[int(k)][i] for i, k in enumerate(chosen)])
    return chosen, out


def cmd_quality(args, result):
    enc = _encoder(args.model, args.threads)
    n, d = enc.dims.num_hidden_layers, enc.dims.hidden_size
    queries, docs = _dev_pairs(args.dev_limit)
    q, p = _exit_embeddings(enc, queries, docs)
    dev = {}
    for k in range(1, n + 1):
        for dim in _dims(d):
            dev[f"{k},{dim}"] = float(ndcg_per_query(_truncated(q[k], dim), _truncated(p[k], dim)).mean())
    full = ndcg_per_query(q[n], p[n])
    half = ndcg_per_query(q[n // 2], p[n // 2])
    doc_tokens = np.array([len(x) for x in enc.tokenize(docs)])
    adaptive = []
    for t in THRESHOLDS:
        cq, eq = adaptive_choice(q, t)
        cp, ep = adaptive_choice(p, t)
        adaptive.append({"threshold": t, "ndcg@10": float(ndcg_per_query(eq, ep).mean()),
                         "mean_layers_docs": float(cp.mean()), "mean_layers_queries": float(cq.mean()),
                         "layer_tokens_docs": float((doc_tokens * cp).sum() / doc_tokens.sum())})
        print(f"adaptive t={t}: dev nDCG@10 {adaptive[-1]['ndcg@10']:.4f}, docs stop at {cp.mean():.2f} layers "
              f"on average", flush=True)
    result["dev"] = {"pairs": len(queries), "ndcg@10": dev, "adaptive": adaptive,
                     "doc_tokens": int(doc_tokens.sum()),
                     "half_vs_full_per_query_mean": float((half - full).mean())}
    print(f"dev: {dev}", flush=True)

    c = _vaswani()
    qids, dids = list(c.queries), list(c.docs)
    vq, vp = _exit_embeddings(enc, [c.queries[i] for i in qids], [c.docs[i] for i in dids])
    vaswani = {}
    for k in range(1, n + 1):
        for dim in _dims(d):
            run = _run(_truncated(vq[k], dim), _truncated(vp[k], dim), qids, dids)
            vaswani[f"{k},{dim}"] = evaluate(run, c.qrels, ["ndcg@10"])["ndcg@10"]
    from mambaret.evaluation.bm25 import bm25_run
    from mambaret.evaluation.fusion import fuse

    bm25 = bm25_run(c.docs, c.queries, k=1000)
    model_run = _run(vq[n], vp[n], qids, dids)
    half_run = _run(vq[n // 2], vp[n // 2], qids, dids)
    vaswani_tokens = np.array([len(x) for x in enc.tokenize([c.docs[i] for i in dids])])
    vaswani_adaptive = []
    for t in THRESHOLDS:
        _, eq = adaptive_choice(vq, t)
        cp, ep = adaptive_choice(vp, t)
        vaswani_adaptive.append({"threshold": t, "ndcg@10": evaluate(_run(eq, ep, qids, dids), c.qrels,
                                                                     ["ndcg@10"])["ndcg@10"],
                                 "mean_layers_docs": float(cp.mean()),
                                 "layer_tokens_docs": float((vaswani_tokens * cp).sum() / vaswani_tokens.sum())})
    result["vaswani"] = {
        "ndcg@10": vaswani, "adaptive": vaswani_adaptive,
        "bm25": evaluate(bm25, c.qrels, ["ndcg@10"])["ndcg@10"],
        "fusion_rrf": evaluate(fuse([model_run, bm25], method="rrf", top_k=1000), c.qrels, ["ndcg@10"])["ndcg@10"],
        "fusion_rrf_half_layers": evaluate(fuse([half_run, bm25], method="rrf", top_k=1000), c.qrels,
                                           ["ndcg@10"])["ndcg@10"],
    }
    print(f"vaswani: {result['vaswani']}", flush=True)


def fit_cost(speed: dict) -> tuple[float, float]:
    """seconds per token = a + b x layers, least squares over the fixed exits."""
    layers = np.array([int(k) for k in speed["docs_per_s"]], dtype=float)
    per_token = np.array([speed["documents"] / v / speed["tokens"] for v in speed["docs_per_s"].values()])
    b, a = np.polyfit(layers, per_token, 1)
    return float(a), float(b)


def adaptive_curve(result) -> list[dict]:
    """The adaptive points with their modelled documents/s (an upper bound, module docstring)."""
    a, b = fit_cost(result["speed"])
    tokens = result["speed"]["tokens"]
    docs = result["speed"]["documents"]
    out = []
    for row in result["dev"]["adaptive"]:
        seconds = tokens * (a + b * row["layer_tokens_docs"])  # the layers each token of the corpus runs
        out.append({**row, "docs_per_s": docs / seconds})
    return out


def fixed_curve(result, dim=None) -> list[tuple[float, float]]:
    """The fixed exits' (docs/s, dev nDCG@10), speeds from the same cost model as the adaptive
    points', so that both curves are compared on one scale."""
    a, b = fit_cost(result["speed"])
    tokens, docs = result["speed"]["tokens"], result["speed"]["documents"]
    n = max(int(k) for k in result["speed"]["docs_per_s"])
    dim = dim or max(int(key.split(",")[1]) for key in result["dev"]["ndcg@10"])
    return [(docs / (tokens * (a + b * k)), result["dev"]["ndcg@10"][f"{k},{dim}"]) for k in range(1, n + 1)]


def above_fixed(point: tuple[float, float], curve: list[tuple[float, float]]) -> float:
    """How far a (docs/s, nDCG) point lies above the fixed exits' piecewise-linear curve at its
    speed (negative: below); None outside the curve's speed range."""
    pts = sorted(curve)
    x, y = point
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y - (y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    return None


def cmd_chart(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = json.load(open(args.json, encoding="utf-8"))
    speed = {int(k): v for k, v in result["speed"]["docs_per_s"].items()}
    v = result["vaswani"]
    dims = sorted({int(key.split(",")[1]) for key in v["ndcg@10"]}, reverse=True)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, dim in enumerate(dims):
        xs = [speed[k] for k in sorted(speed)]
        ys = [v["ndcg@10"][f"{k},{dim}"] for k in sorted(speed)]
        ax.plot(xs, ys, "o-", color=f"C{i}", label=f"{dim} dims")
        for k, x, y in zip(sorted(speed), xs, ys):
            if i == 0:
                ax.annotate(f"{k} layer{'s' if k > 1 else ''}", (x, y), textcoords="offset points", xytext=(4, 6),
                            fontsize=8)
    a, b = fit_cost(result["speed"])
    tokens, docs = result["speed"]["tokens"], result["speed"]["documents"]
    ada = [(docs / (tokens * (a + b * r["layer_tokens_docs"])), r["ndcg@10"]) for r in v["adaptive"]]
    ax.plot([p[0] for p in ada], [p[1] for p in ada], "x--", color="k", alpha=0.6,
            label="adaptive depth (modelled speed, not shipped)")
    ax.axhline(v["bm25"], color="gray", ls=":", label=f"BM25 {v['bm25']:.3f}")
    ax.axhline(v["fusion_rrf"], color="C5", ls="-.", label=f"RRF fusion, model + BM25 {v['fusion_rrf']:.3f}")
    ax.set_xlabel(f"documents/s (Vaswani, {result['speed']['threads']} threads)")
    ax.set_ylabel("nDCG@10 (Vaswani)")
    ax.set_title("Default model: layers x dims (Vaswani reports; it chooses nothing)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right", bbox_to_anchor=(1, 0.9))  # clear of the curves and the exits' labels
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)
    print(f"wrote {args.png}")


def cmd_teacher(args, result):
    """The teacher's own dev nDCG@10 at every width (its stored float16 vectors of the dev pairs,
    ../shared/data/default_model), as it is and rotated to the principal axes of its training
    vectors: what distillation to it can give a truncated student at most."""
    here = os.path.join(SHARED, "default_model")
    load = lambda name: np.load(os.path.join(here, name)).astype(np.float32)  # noqa: E731
    q, p = load("dev.query.f16.npy"), load("dev.positive.f16.npy")
    train = np.concatenate([load("train.query.f16.npy"), load("train.positive.f16.npy")])
    axes = np.linalg.eigh(np.cov(train.T))[1][:, ::-1]
    d = q.shape[1]
    rows = {}
    for name, (qq, pp) in {"as is": (q, p), "principal axes": (q @ axes, p @ axes)}.items():
        rows[name] = {dim: float(ndcg_per_query(_truncated(qq, dim), _truncated(pp, dim)).mean()) for dim in _dims(d)}
        print(f"teacher, {name}: " + ", ".join(f"{dim}: {v:.4f} ({v / rows[name][d]:.1%})"
                                               for dim, v in rows[name].items()), flush=True)
    result["teacher_dev"] = rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["identical", "speed", "quality", "all", "chart", "teacher"])
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--speed-docs", type=int, default=1500)
    parser.add_argument("--chunk", type=int, default=250, help="documents per timed call")
    parser.add_argument("--threads-list", type=lambda v: [int(x) for x in v.split(",")], default=[2, 1],
                        help="thread counts to time (the first, --threads', is the chart's)")
    parser.add_argument("--identical-docs", type=int, default=11429)
    parser.add_argument("--dev-limit", type=int, default=None)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "exits.json"))
    parser.add_argument("--json", default=os.path.join(HERE, "results", "exits.json"))
    parser.add_argument("--png", default=os.path.join(HERE, "results", "exits.png"))
    args = parser.parse_args(argv)
    if args.what == "chart":
        cmd_chart(args)
        return 0
    result = json.load(open(args.out, encoding="utf-8")) if os.path.exists(args.out) else {}
    result["command"] = "python3 bench/exits_bench.py " + " ".join(argv if argv is not None else sys.argv[1:])
    steps = {"identical": [cmd_identical], "speed": [cmd_speed], "quality": [cmd_quality], "teacher": [cmd_teacher],
             "all": [cmd_identical, cmd_speed, cmd_quality]}[args.what]
    for step in steps:
        step(args, result)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    if "speed" in result and "dev" in result:
        curve = fixed_curve(result)
        result["dev"]["fixed_modelled"] = [{"layers": k + 1, "docs_per_s": x, "ndcg@10": y}
                                           for k, (x, y) in enumerate(curve)]
        result["dev"]["adaptive_modelled"] = adaptive_curve(result)
        for row in result["dev"]["adaptive_modelled"]:
            row["above_fixed"] = above_fixed((row["docs_per_s"], row["ndcg@10"]), curve)
            print(f"adaptive t={row['threshold']}: {row['docs_per_s']:.1f} docs/s (modelled), dev nDCG@10 "
                  f"{row['ndcg@10']:.4f}, above the fixed exits by {row['above_fixed']}")
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
