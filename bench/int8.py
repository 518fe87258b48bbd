"""Int8 (W8A8) against float32: accuracy on the packaged default model, speed on the 130M shape,
memory. Results: bench/results/int8.md.

    python3 bench/int8.py choose                      # default model on its own pairs and random text
    python3 bench/int8.py accuracy [--docs 2000]      # default model: cosines, Vaswani nDCG@10
    python3 bench/int8.py speed [--rounds 6]          # 130M shape, length 512, 2 threads, one process
    python3 bench/int8.py speed --shape mamba2-130m   # the same for Mamba-2's 130M shape
    python3 bench/int8.py memory                      # bytes of the weights, and RSS after loading
    python3 bench/int8.py static                      # calibrated static activation scales vs per-token
    python3 bench/int8.py mamba2 [--layers 24]        # int8 on a random Mamba-2, beside smaller perturbations
    python3 bench/int8.py search [--n 1000000]        # Int8FlatIndex vs FlatIndex, 1,000 queries, 2 threads

choose: what the choices (rotation or not; smoothing) were made on: the cosine between int8 and
float32 embeddings of the default model's own pairs (tests/data/default_model_sample.jsonl, a
sample of its training data: queries, positives, negatives) and of random token sequences, with
and without the rotation.

accuracy: the cosine between the int8 and float32 embeddings of the first --docs Vaswani documents
(mean and min), and nDCG@10 / MRR@10 / R@100 of the float32 model, the int8 model and plain W8A8
(no rotation) on all of Vaswani. Vaswani only reports here; nothing was chosen on it.

speed: a seeded random checkpoint of mamba-130m-hf's shape (d 768, 24 layers, d_inner 1536, N 16),
a batch of --batch sequences of --length tokens; the float32 and the int8 model in the same process,
alternating which goes first each round, --reps timed forwards per model and round after a warm-up.
Reports tokens/s per round, the best of each, and the ratio of the bests (and of the medians).

search: --n random unit vectors of 768 dims, --nq queries, k 10; the float FlatIndex, the
Int8FlatIndex on its default kernel (AVX-512 VNNI where present) and on the AVX2 one
(MAMBARET_SIMD=avx2's), and the BinaryFlatIndex on its default and its AVX-512 kernel, in
alternating rounds; the best of the rounds, and recall@10 against the float index.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import mambaret as mr  # noqa: E402
from mambaret import _C  # noqa: E402

VASWANI = os.path.join(os.path.dirname(HERE), "..", "shared", "data", "vaswani")


def machine() -> str:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info = _C.build_info()
    return f"{model}, {os.cpu_count()} cores; simd {info['simd']}; int8 {info['int8']}; blas {info['blas']}"


def accuracy(args) -> None:
    from mambaret.arch.int8 import save_quantized
    from mambaret import evaluate
    from mambaret.search.retrieval import load_collection

    col = load_collection(args.collection)
    doc_ids = list(col.docs)
    texts = [col.docs[d] for d in doc_ids]
    qids = list(col.queries)
    fp = mr.MambaEncoder.from_pretrained(mr.DEFAULT_MODEL, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        plain_dir = save_quantized(mr.DEFAULT_MODEL, os.path.join(tmp, "plain"), rotate=False)
        systems = {"float32": fp,
                   "int8 (W8A8 + rotation)": mr.MambaEncoder.from_pretrained(mr.DEFAULT_MODEL, quantize="int8",
                                                                             threads=args.threads),
                   "int8 plain W8A8 (no rotation)": mr.MambaEncoder.from_pretrained(plain_dir, threads=args.threads)}
        emb = {}
        for name, enc in systems.items():
            d = enc.encode_document(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
            q = enc.encode_query([col.queries[i] for i in qids], normalize_embeddings=True, show_progress_bar=False)
            emb[name] = (d, q)
    print(f"machine: {machine()}")
    print(f"default model ({mr.DEFAULT_MODEL}), {len(texts)} Vaswani documents, {len(qids)} queries\n")
    print(f"| system | cosine vs fp32, first {args.docs} docs: mean | min | nDCG@10 | MRR@10 | R@100 |")
    print("|---|---|---|---|---|---|")
    ref = emb["float32"][0][: args.docs]
    for name, (d, q) in emb.items():
        cos = (d[: args.docs] * ref).sum(1)
        scores = q @ d.T
        top = np.argsort(-scores, axis=1, kind="stable")[:, :1000]
        run = {qid: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, qid in enumerate(qids)}
        m = evaluate(run, col.qrels, ["ndcg@10", "mrr@10", "recall@100"])
        print(f"| {name} | {cos.mean():.5f} | {cos.min():.5f} | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | "
              f"{m['recall@100']:.4f} |")


def choose(args) -> None:
    import json

    from mambaret.arch.int8 import save_quantized

    texts = []
    with open(os.path.join(os.path.dirname(HERE), "tests", "data", "default_model_sample.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            texts += [row["query"], row["positive"], *row.get("negatives", [])]
    rng = np.random.default_rng(0)
    fp = mr.MambaEncoder.from_pretrained(mr.DEFAULT_MODEL)
    random_ids = [list(map(int, rng.integers(4, fp.model.config["vocab_size"], rng.integers(8, 200)))) for _ in range(300)]
    print(f"machine: {machine()}")
    print(f"default model: {len(texts)} texts of its own pairs, {len(random_ids)} random token sequences\n")
    print("| variant | own pairs: mean cosine | min | random tokens: mean | min |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, rotate in (("W8A8 + Hadamard rotations of in_proj's and out_proj's inputs", True), ("plain W8A8", False)):
            enc = mr.MambaEncoder.from_pretrained(save_quantized(mr.DEFAULT_MODEL, os.path.join(tmp, name[:5]), rotate))
            row = []
            for inputs in (texts, random_ids):
                a = fp.encode(inputs, normalize_embeddings=True)
                b = enc.encode(inputs, normalize_embeddings=True)
                c = (a * b).sum(1)
                row += [f"{c.mean():.5f}", f"{c.min():.5f}"]
            print(f"| {name} | " + " | ".join(row) + " |")


def speed(args) -> None:
    from mambaret.arch.random_model import write_random_model

    with tempfile.TemporaryDirectory() as tmp:
        if args.shape == "mamba-130m":
            path = write_random_model(os.path.join(tmp, "m"), seed=0, shape="130m")
            shape = "130M shape (d 768, 24 layers, d_inner 1536, N 16)"
        else:  # Mamba-2's shapes, as bench/mamba2_bench.py writes them once under bench/.cache
            sys.path.insert(0, HERE)
            from mamba2_bench import SHAPES, checkpoint

            path = checkpoint(args.shape)
            shape = f"{args.shape} shape ({SHAPES[args.shape][1]})"
        models = {"float32": mr.MambaEncoder.from_pretrained(path, threads=args.threads).model,
                  "int8": mr.MambaEncoder.from_pretrained(path, threads=args.threads, quantize="int8").model}
    kernels = ["auto"] + (args.kernels.split(",") if args.kernels else [])
    for k in kernels[1:]:  # the same int8 model through another kernel: set just before its forwards
        models[f"int8 {k}"] = models["int8"]
    n = args.batch * args.length
    tokens = np.random.default_rng(0).integers(0, 50280, n).astype(np.int32)
    offsets = np.arange(0, n + 1, args.length, dtype=np.int64)
    outputs = {}
    for name, model in models.items():  # warm-up: pages, workspace
        outputs[name] = model.forward(tokens, offsets, threads=args.threads, max_tokens=args.max_tokens)
    cos = (outputs["int8"] * outputs["float32"]).sum(1) / np.linalg.norm(outputs["int8"], axis=1) / \
        np.linalg.norm(outputs["float32"], axis=1)
    rates = {name: [] for name in models}
    print(f"machine: {machine()}")
    print(f"{shape}, {args.batch} x {args.length} tokens, "
          f"{args.threads} threads, max_tokens {args.max_tokens}, best of {args.reps} forwards per round")
    for r in range(args.rounds):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        line = []
        for name in order:
            _C.set_int8_kernel(name.split()[1] if name.startswith("int8 ") else "auto")
            best = float("inf")
            for _ in range(args.reps):
                t0 = time.perf_counter()
                models[name].forward(tokens, offsets, threads=args.threads, max_tokens=args.max_tokens)
                best = min(best, time.perf_counter() - t0)
            rates[name].append(n / best)
            line.append(f"{name} {n / best:8.1f} tok/s")
        print(f"round {r + 1}: " + ", ".join(line))
    _C.set_int8_kernel("auto")
    # each round's own ratio: the two models measured minutes apart in a round share the machine's load
    paired = {k: float(np.median(np.array(v) / np.array(rates["float32"]))) for k, v in rates.items()}
    print("median over rounds of each round's ratio to float32: " +
          ", ".join(f"{k} {v:.2f}x" for k, v in paired.items() if k != "float32"))
    best = {k: max(v) for k, v in rates.items()}
    med = {k: float(np.median(v)) for k, v in rates.items()}
    print(f"best: float32 {best['float32']:.1f} tok/s, int8 {best['int8']:.1f} tok/s, "
          f"int8 / float32 {best['int8'] / best['float32']:.2f}x (medians: {med['int8'] / med['float32']:.2f}x)")
    for name in models:
        if name.startswith("int8 "):
            print(f"{name}: best {best[name]:.1f} tok/s, {best[name] / best['float32']:.2f}x float32 "
                  f"(medians {med[name] / med['float32']:.2f}x)")
    print(f"cosine of the int8 and float32 embeddings of these random-weight sequences: mean {cos.mean():.4f}, "
          f"min {cos.min():.4f}")


def static(args) -> None:
    """Calibrated static activation scales (one per product, from a calibration set) against the
    per-token dynamic ones the engine uses, emulated in torch on the default model: the same int8
    weights, rotation and rounding, the activations quantized either way. Calibration on one half
    of the model's own pairs sample, cosines to float32 on the other half and on random tokens."""
    import json

    import torch

    from mambaret.arch.int8 import quantize_linears, rotation_blocks
    from mambaret.train import BiEncoder, load_model, load_tokenizer

    rows = [json.loads(line) for line in open(os.path.join(os.path.dirname(HERE), "tests", "data",
                                                           "default_model_sample.jsonl"))]
    texts = [t for r in rows for t in (r["query"], r["positive"], *r.get("negatives", []))]
    calibration, held_out = texts[0::2], texts[1::2]
    model = load_model(mr.DEFAULT_MODEL).eval()
    encoder = BiEncoder(model, load_tokenizer(mr.DEFAULT_MODEL)[0])
    rng = np.random.default_rng(0)
    random_ids = [list(map(int, rng.integers(4, model.config.vocab_size, rng.integers(8, 200)))) for _ in range(300)]
    state = {"mode": "float", "maxima": {}, "samples": {}, "scales": {}}

    def fake_quant(linear, qweight, wscale, signs, block, key):
        qw = torch.from_numpy(qweight.astype(np.float32))
        sw = torch.from_numpy(wscale)
        original = linear.forward

        def forward(a):
            if state["mode"] == "float":
                return original(a)
            x = a
            a = a.detach().float().contiguous()
            if signs is not None:  # the input as the engine quantizes it: rotated
                a = torch.from_numpy(_C.op_hadamard(a.numpy(), block, signs))
            if state["mode"] == "calibrate":  # statistics of the float model's activations
                state["maxima"][key] = max(state["maxima"].get(key, 0.0), float(a.abs().max()))
                state["samples"].setdefault(key, []).append(a.abs().flatten()[::7])
                return original(x)
            if state["mode"] == "dynamic":
                sa = a.abs().amax(1, keepdim=True) / 127
            else:
                sa = torch.full((a.shape[0], 1), state["scales"][key])
            qa = torch.clamp(torch.round(a / torch.where(sa > 0, sa, torch.ones_like(sa))), -127, 127)
            out = (qa @ qw.T) * sa * sw
            return out + linear.bias if linear.bias is not None else out

        linear.forward = forward

    blocks = rotation_blocks(model.config.hidden_size, model.config.intermediate_size)
    for i, layer in enumerate(model.layers):
        mixer = layer.mixer
        t = quantize_linears(mixer.in_proj.weight.detach().numpy(), mixer.out_proj.weight.detach().numpy(), i, blocks)
        for proj in ("in_proj", "out_proj"):
            fake_quant(getattr(mixer, proj), t[f"{proj}.qweight"], t[f"{proj}.weight_scale"],
                       t[f"{proj}.input_rotation"], blocks[proj], (i, proj))

    def embed(inputs):
        with torch.no_grad():
            if isinstance(inputs[0], str):
                return encoder.encode(inputs)
            return encoder.embed_ids(inputs).numpy()

    floats = {"own pairs": embed(held_out), "random tokens": embed(random_ids)}
    state["mode"] = "calibrate"
    embed(calibration)
    print(f"machine: {machine()}")
    print(f"default model, calibration {len(calibration)} texts of its own pairs sample; held out "
          f"{len(held_out)} texts and {len(random_ids)} random token sequences\n")
    print("| activation scales | own pairs: mean cosine | min | random tokens: mean | min |")
    print("|---|---|---|---|---|")
    state["mode"] = "dynamic"
    variants = [("per token, dynamic (the engine's)", None)]
    variants += [(f"static per product, {q} quantile of calibration |a|", q) for q in ("max", 0.9999, 0.999)]
    for name, q in variants:
        if q is not None:
            state["mode"] = "static"
            state["scales"] = {k: (state["maxima"][k] if q == "max" else
                                   float(torch.quantile(torch.cat(state["samples"][k])[:1 << 24], q))) / 127
                               for k in state["maxima"]}
        row = []
        for label, inputs in (("own pairs", held_out), ("random tokens", random_ids)):
            c = (embed(inputs) * floats[label]).sum(1)
            row += [f"{c.mean():.5f}", f"{c.min():.5f}"]
        print(f"| {name} | " + " | ".join(row) + " |")
    # the emulation against the engine's own int8 path
    engine = mr.MambaEncoder.from_pretrained(mr.DEFAULT_MODEL, quantize="int8").encode(held_out, normalize_embeddings=True)
    state["mode"] = "dynamic"
    print(f"\nemulated dynamic against the engine's int8 embeddings: min cosine "
          f"{(embed(held_out) * engine).sum(1).min():.6f}")


def mamba2(args) -> None:
    """How far int8 moves a Mamba-2 model with transformers' random initialisation (no trained
    Mamba-2 weights are at hand offline): the cosine between int8 and float32 embeddings, beside
    two smaller perturbations of the same model: its weights rounded to bfloat16, and each part
    of in_proj (z, x, B and C, dt) or out_proj quantized alone, weights only."""
    import copy

    import torch
    from transformers import Mamba2Config, Mamba2Model

    from mambaret.arch.int8 import quantize_rows

    sys.path.insert(0, HERE)
    from mamba2_bench import SHAPES

    cfg = {**SHAPES["mamba2-130m"][1], "num_hidden_layers": args.layers, "vocab_size": 1000}
    torch.manual_seed(1)
    model = Mamba2Model(Mamba2Config(**cfg)).eval()
    rng = np.random.default_rng(0)
    ids = [rng.integers(0, 1000, args.length).tolist() for _ in range(args.texts)]
    E, G, N, H = 2 * cfg["hidden_size"], cfg["n_groups"], cfg["state_size"], cfg["num_heads"]
    parts = {"z": (0, E), "x": (E, 2 * E), "B and C": (2 * E, 2 * E + 2 * G * N), "dt": (2 * E + 2 * G * N, 2 * E + 2 * G * N + H)}

    def encode(m, **kw):
        with tempfile.TemporaryDirectory() as tmp:
            m.save_pretrained(tmp)
            return mr.MambaEncoder.from_pretrained(tmp, threads=args.threads, **kw).encode(ids, normalize_embeddings=True)

    def weight_only(name, rows=None):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in m.named_parameters():
                if n.endswith(f"{name}.weight"):
                    q, sc = quantize_rows(p.numpy())
                    deq = torch.from_numpy(q.astype(np.float32) * sc[:, None])
                    lo, hi = rows or (0, p.shape[0])
                    p[lo:hi] = deq[lo:hi]
        return m

    fp = encode(model)
    rows = [("int8 (W8A8 + rotation), the engine's", encode(model, quantize="int8")),
            ("weights rounded to bfloat16, float32 math", encode(copy.deepcopy(model).to(torch.bfloat16)))]
    rows += [(f"in_proj's {k} rows int8, weights only", encode(weight_only("in_proj", r))) for k, r in parts.items()]
    rows.append(("out_proj int8, weights only", encode(weight_only("out_proj"))))
    print(f"machine: {machine()}")
    print(f"mamba2-130m shape with {args.layers} layers, transformers' random init (seed 1), {args.texts} x "
          f"{args.length} random tokens\n")
    print("| perturbation | cosine to float32: mean | min |")
    print("|---|---|---|")
    for name, emb in rows:
        c = (emb * fp).sum(1)
        print(f"| {name} | {c.mean():.4f} | {c.min():.4f} |")


def memory(args) -> None:
    from mambaret._memory import model_weight_bytes
    from mambaret.arch.config import read_config
    from mambaret.arch.random_model import write_random_model

    def rss() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        path = write_random_model(os.path.join(tmp, "m"), seed=0, shape="130m")
        dims = read_config(path)
        d, E, L = dims.hidden_size, dims.intermediate_size, dims.num_hidden_layers
        fp32 = model_weight_bytes(dims, 50280)
        linears = 4 * L * (2 * E * d + d * E)
        int8 = fp32 - linears + L * (2 * E * d + d * E + 4 * 2 * (2 * E + d) + E)  # weights, scales + sums, signs
        print(f"130M shape: float32 weights {fp32 / 1e6:.1f} MB, of which in_proj + out_proj "
              f"{linears / 1e6:.1f} MB; int8 model {int8 / 1e6:.1f} MB ({fp32 / int8:.2f}x less), in_proj + "
              f"out_proj {linears / 4 / 1e6:.1f} MB + scales")
        import subprocess

        for name, q in (("float32", None), ("int8", "'int8'")):  # a fresh process each: no reused heap
            code = ("import sys; sys.path.insert(0, %r); import mambaret as mr\n"
                    "def rss():\n    return [int(l.split()[1]) * 1024 for l in open('/proc/self/status') "
                    "if l.startswith('VmRSS:')][0]\n"
                    "before = rss(); enc = mr.MambaEncoder.from_pretrained(%r, quantize=%s); print(rss() - before)"
                    % (os.path.dirname(HERE), path, q))
            grown = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout.split()[-1])
            print(f"RSS growth loading the {name} model (a process of its own): {grown / 1e6:.1f} MB")


def search(args) -> None:
    rng = np.random.default_rng(0)
    vectors = np.empty((args.n, 768), np.float32)
    for start in range(0, args.n, 1 << 16):
        block = rng.standard_normal((min(1 << 16, args.n - start), 768), dtype=np.float32)
        vectors[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    queries = rng.standard_normal((args.nq, 768), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    flat = mr.FlatIndex(768, threads=args.threads)
    int8 = mr.Int8FlatIndex(768, threads=args.threads)
    int8.train(vectors)
    binary = mr.BinaryFlatIndex(768, threads=args.threads)
    for start in range(0, args.n, 1 << 16):
        for index in (flat, int8, binary):
            index.add(vectors[start:start + (1 << 16)])
    del vectors
    # (name, index, code kernel); the code indexes search by code alone (no rescoring vectors attached)
    methods = [("float FlatIndex", flat, None), ("Int8FlatIndex, default kernel", int8, "auto"),
               ("Int8FlatIndex, AVX2 kernel", int8, "avx2"), ("BinaryFlatIndex, default kernel", binary, "auto"),
               ("BinaryFlatIndex, AVX-512 VPOPCNTDQ kernel", binary, "avx512")]
    available = {"auto", None} | set(_C.code_kernels(False))
    methods = [m for m in methods if m[2] in available and (m[1] is not int8 or m[2] in {"auto"} | set(_C.code_kernels(True)))]
    times = {m[0]: [] for m in methods}
    ids = {}
    print(f"machine: {machine()}")
    print(f"{args.n} x 768 random unit vectors, {args.nq} queries, k 10, {args.threads} threads; "
          f"int8 code kernels here: {_C.code_kernels(True)}")
    for r in range(args.rounds):
        for name, index, kernel in (methods if r % 2 == 0 else methods[::-1]):
            t0 = time.perf_counter()
            if kernel is None:
                _, found = index.search(queries, k=10)
            else:
                _, found = index.search(queries, k=10, kernel=kernel)
            times[name].append(time.perf_counter() - t0)
            ids[name] = found
        print(f"round {r + 1}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)
    best = {n: min(t) for n, t in times.items() if t}
    for name, t in best.items():
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids[name], ids["float FlatIndex"])])
        print(f"{name}: best {t:.3f} s, {best['float FlatIndex'] / t:.2f}x the float index, recall@10 {recall:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    sub.add_parser("choose")
    a = sub.add_parser("accuracy")
    a.add_argument("--docs", type=int, default=2000)
    a.add_argument("--collection", default=VASWANI)
    a.add_argument("--threads", type=int, default=2)
    s = sub.add_parser("speed")
    s.add_argument("--rounds", type=int, default=6)
    s.add_argument("--shape", default="mamba-130m", choices=("mamba-130m", "mamba2-130m", "mamba2-1.3b"),
                   help="seeded random weights of this shape (Mamba-2's from bench/mamba2_bench.py)")
    s.add_argument("--reps", type=int, default=2)
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--length", type=int, default=512)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--max-tokens", type=int, default=8192)
    s.add_argument("--kernels", default="", help="also time the int8 model through these kernels, e.g. "
                   "avxvnni,avx2 (comma-separated)")
    sub.add_parser("memory")
    sub.add_parser("static")
    m2 = sub.add_parser("mamba2")
    m2.add_argument("--layers", type=int, default=24)
    m2.add_argument("--texts", type=int, default=8)
    m2.add_argument("--length", type=int, default=512)
    m2.add_argument("--threads", type=int, default=2)
    q = sub.add_parser("search")
    q.add_argument("--n", type=int, default=1_000_000)
    q.add_argument("--nq", type=int, default=1000)
    q.add_argument("--rounds", type=int, default=3)
    q.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    {"choose": choose, "accuracy": accuracy, "speed": speed, "memory": memory, "search": search,
     "static": static, "mamba2": mamba2}[args.what](args)


if __name__ == "__main__":
    main()
