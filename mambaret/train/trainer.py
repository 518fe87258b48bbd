"""The bi-encoder trainer: texts -> last-token embeddings -> loss -> AdamW, with checkpoints."""
from __future__ import annotations

import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..encoding.tokenization import TextTokenizer, TruncationStats
from . import saving
from .data import TrainExample, batches_per_epoch, epoch_order, mine_hard_negative_ids, mining_pool
from .losses import (CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss, kl_distillation_loss,
                     mse_distillation_loss)
from .optim import linear_schedule, make_optimizer, warmup_steps

LOSSES = ("mnrl", "cached-mnrl", "mse", "kl", "matryoshka", "adaptive-layer", "2d-matryoshka")
# the losses that wrap a base loss (mambaret.train.matryoshka), and the bases each takes
WRAPPERS = {"matryoshka": ("mnrl", "cached-mnrl", "mse"), "adaptive-layer": ("mnrl", "mse"),
            "2d-matryoshka": ("mnrl", "mse")}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class TrainingArguments:
    """Hyper-parameters of a run. Defaults: in-batch InfoNCE with scale 20, AdamW at 1e-5 (the
    Mamba Retriever paper's rate), 10 % linear warm-up then linear decay, clipping at norm 1."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int | None = 512
    loss: str = "mnrl"
    scale: float = 20.0
    mini_batch_size: int = 32          # cached-mnrl: texts per forward/backward pass
    temperature: float = 1.0           # kl
    # matryoshka, adaptive-layer, 2d-matryoshka (sentence-transformers' defaults; mambaret.train.matryoshka)
    base_loss: str = "mnrl"            # the wrapped loss: mnrl, cached-mnrl (matryoshka only) or mse
    matryoshka_dims: list[int] | None = None   # default: config.json's, else [d, d/2, d/4, d/8]
    matryoshka_weights: list[float] | None = None  # default: 1 each
    n_dims_per_step: int | None = None  # default: -1 (all) for matryoshka, 1 for 2d-matryoshka
    n_layers_per_step: int = 1
    last_layer_weight: float = 1.0
    prior_layers_weight: float = 1.0
    kl_div_weight: float = 1.0
    kl_temperature: float = 0.3
    exit_layers: list[int] | None = None  # prior exits trained; default all 1..n_layer-1
    exit_heads: bool = False           # give each trained exit its own gain (exits.{k}.weight), else norm_f's
    negatives_per_query: int | None = None  # use at most this many of each line's negatives (None: all)
    mine_negatives: int = 0            # mine this many hard negatives per query before each epoch
    mine_skip: int = 0                 # ... skipping the model's top few (likely unjudged positives)
    seed: int = 0
    save_steps: int = 0                # checkpoint every N optimizer steps (0: only the final model)
    save_total_limit: int | None = None
    eval_steps: int = 0                # nDCG@10 on the dev collection every N steps (0: at the end only)
    max_steps: int | None = None
    device: str = "cpu"
    threads: int | None = None
    show_progress_bar: bool | None = None

    def check(self) -> None:
        def positive_int(name, allow_zero=False, allow_none=False):
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
                raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} int, got {value!r}")

        for name in ("epochs", "batch_size", "mini_batch_size"):
            positive_int(name)
        for name in ("save_steps", "eval_steps", "mine_negatives", "mine_skip", "seed"):
            positive_int(name, allow_zero=True)
        for name in ("max_length", "max_steps", "threads", "save_total_limit"):
            positive_int(name, allow_none=True)
        positive_int("negatives_per_query", allow_zero=True, allow_none=True)
        if self.max_length is not None and self.max_length < 2:
            raise ValueError("max_length must be at least 2 (one token and EOS)")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.loss in WRAPPERS and self.base_loss not in WRAPPERS[self.loss]:
            raise ValueError(f"loss {self.loss!r} wraps one of {', '.join(WRAPPERS[self.loss])}, got base_loss "
                             f"{self.base_loss!r}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
        if self.weight_decay < 0 or self.max_grad_norm <= 0 or self.scale <= 0 or self.temperature <= 0:
            raise ValueError("weight_decay must be >= 0; max_grad_norm, scale and temperature > 0")
        if self.device != "cpu" and not str(self.device).startswith("cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_tokenizer(model_dir: str) -> tuple[TextTokenizer, list[str]]:
    """Our tokenizer (with the encoder's EOS rule) and the files to copy into saved models."""
    from ..arch.config import read_config

    path = os.path.join(model_dir, "tokenizer.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_dir!r} has no tokenizer.json; training on texts needs one")
    tokenizer = TextTokenizer.from_file(path, read_config(model_dir).eos_token_id, model_dir)
    files = [os.path.join(model_dir, n) for n in TOKENIZER_FILES if os.path.isfile(os.path.join(model_dir, n))]
    return tokenizer, files


def load_model(model_dir: str, device: str = "cpu"):
    """mambaret.nn.MambaModel from a checkpoint folder, in float32 (the master weights)."""
    from ..nn import MambaModel

    return MambaModel.from_pretrained(model_dir).float().to(device)


class BiEncoder:
    """Texts -> L2-normalised last-token embeddings through a torch MambaModel, exactly as
    MambaEncoder.encode pools (EOS appended, `ids[:max_length-1] + [eos]` truncation)."""

    def __init__(self, model, tokenizer: TextTokenizer, max_length: int | None = None, device: str = "cpu"):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.device = torch.device(device)
        self.truncation = TruncationStats()
        self.tokens_seen = 0

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer.encode(texts, self.max_length, self.truncation)

    def packed(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids -> (tokens [T], offsets [B + 1]) on the training device, counted as seen."""
        lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
        offsets = torch.zeros(len(ids) + 1, dtype=torch.long)
        torch.cumsum(lengths, 0, out=offsets[1:])
        tokens = torch.tensor([t for x in ids for t in x], dtype=torch.long)
        self.tokens_seen += int(tokens.numel())
        return tokens.to(self.device), offsets.to(self.device)

    def embed_ids(self, ids: list[list[int]]) -> torch.Tensor:
        from ..nn import last_token_embeddings

        tokens, offsets = self.packed(ids)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            hidden = self.model.forward_packed(tokens, offsets)
            pooled = last_token_embeddings(hidden, offsets)
        return F.normalize(pooled.float(), dim=-1)

    def embed_exits(self, texts: list[str], layers) -> dict[int, torch.Tensor]:
        """{k: [n, d]} L2-normalised embeddings at each exit k (mambaret.arch.exits), with autograd,
        from one pass that stops at the deepest."""
        ids = self.token_ids(texts)
        tokens, offsets = self.packed(ids)
        out = {}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            states = self.model.layer_states_packed(tokens, offsets, layers)
            for k, hidden in states.items():  # the norm is per row: pool first, then norm
                out[k] = F.normalize(self.model.exit_norm(hidden[offsets[1:] - 1], k).float(), dim=-1)
        return out

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """Embeddings with autograd (the loss's view of the model)."""
        return self.embed_ids(self.token_ids(texts))

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """float32 [n, d] NumPy embeddings without autograd (mining, evaluation)."""
        was_training = self.model.training
        self.model.eval()
        seen = self.tokens_seen
        try:
            ids = self.token_ids(list(texts))
            order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
            out = np.empty((len(ids), self.model.config.hidden_size), dtype=np.float32)
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                out[chunk] = self.embed_ids([ids[i] for i in chunk]).cpu().numpy()
            return out
        finally:
            self.tokens_seen = seen
            self.model.train(was_training)


def dev_ndcg(biencoder: BiEncoder, collection, k: int = 10) -> float:
    """nDCG@k of the current model on a collection (exact search with FlatIndex)."""
    from ..evaluation.metrics import evaluate
    from ..search.index import FlatIndex

    doc_ids = list(collection.docs)
    index = FlatIndex(biencoder.model.config.hidden_size)
    index.add(biencoder.encode([collection.docs[d] for d in doc_ids]), ids=doc_ids)
    qids = list(collection.queries)
    scores, ids = index.search(biencoder.encode([collection.queries[q] for q in qids]), k=min(k, len(doc_ids)))
    run = {q: {d: float(s) for d, s in zip(row_ids, row_scores) if d is not None}
           for q, row_ids, row_scores in zip(qids, ids, scores)}
    return evaluate(run, collection.qrels, [f"ndcg@{k}"])[f"ndcg@{k}"]


@dataclass
class TrainState:
    """Where a run stands: saved in every checkpoint and restored on resume."""

    global_step: int = 0
    epoch: int = 0
    next_batch: int = 0
    mined: list[list[int]] | None = None  # this epoch's mined negatives: positions in the trainer's pool
    history: list[dict] = field(default_factory=list)


class Trainer:
    """Fine-tunes a MambaModel as a bi-encoder.

    model: a mambaret.nn.MambaModel; tokenizer: a TextTokenizer; examples: TrainExamples.
    corpus: the pool to mine hard negatives from (default: the training texts). dev: a
    mambaret.search.retrieval.Collection for nDCG@10. teacher: anything with
    `encode(texts, normalize_embeddings=True)` (a MambaEncoder, a SentenceTransformer, or
    PrecomputedEmbeddings) for "mse", and for "kl" when the data carries no scores.
    """

    def __init__(self, model, tokenizer: TextTokenizer, args: TrainingArguments, examples: list[TrainExample],
                 output_dir: str, *, corpus: list[str] | None = None, dev=None, teacher=None,
                 tokenizer_files: list[str] | None = None, log=None):
        args.check()
        if not examples:
            raise ValueError("no training examples")
        self.args = args
        self.examples = examples
        self.output_dir = output_dir
        self.pool = mining_pool(examples, corpus) if args.mine_negatives else None
        self.dev = dev
        self.teacher = teacher
        self.tokenizer_files = list(tokenizer_files or [])
        self.log = log or (lambda message: print(message, file=sys.stderr))
        if args.threads:
            torch.set_num_threads(args.threads)
        self.model = model.to(args.device)
        self.biencoder = BiEncoder(self.model, tokenizer, args.max_length, args.device)
        if args.loss in WRAPPERS:
            self.loss_fn = self._wrapped_loss()
        else:
            self.loss_fn = (CachedMultipleNegativesRankingLoss(args.scale, args.mini_batch_size)
                            if args.loss == "cached-mnrl" else MultipleNegativesRankingLoss(args.scale))
        self._check_loss_inputs()
        self.steps_per_epoch = batches_per_epoch(len(examples), args.batch_size)
        self.total_steps = args.epochs * self.steps_per_epoch
        if args.max_steps is not None:
            self.total_steps = min(self.total_steps, args.max_steps)
        self.optimizer = make_optimizer(self.model, args.lr, args.weight_decay)
        self.scheduler = linear_schedule(self.optimizer, self.total_steps,
                                         warmup_steps(self.total_steps, args.warmup_ratio))
        self.state = TrainState()

    def _wrapped_loss(self):
        """matryoshka / adaptive-layer / 2d-matryoshka over the base loss; the saved model's
        config.json lists the dims and exits it was trained for."""
        from .matryoshka import (AdaptiveLayerLoss, CachedMatryoshkaLoss, MatryoshkaLoss, MNRLBase, MSEBase,
                                 default_matryoshka_dims)

        a, config = self.args, self.model.config
        d, n = config.hidden_size, config.num_hidden_layers
        base = MSEBase(d) if a.base_loss == "mse" else MNRLBase(a.scale)
        loss = None
        if a.loss in ("matryoshka", "2d-matryoshka"):
            dims = a.matryoshka_dims or default_matryoshka_dims(d, getattr(self.model, "matryoshka_dims", None))
            step = a.n_dims_per_step if a.n_dims_per_step is not None else (-1 if a.loss == "matryoshka" else 1)
            loss = MatryoshkaLoss(base, dims, a.matryoshka_weights, step, full_dim=d)
            self.model.matryoshka_dims = sorted(set(loss.dims) | {d}, reverse=True)
            if a.base_loss == "cached-mnrl":
                return CachedMatryoshkaLoss(a.scale, a.mini_batch_size, loss)
        if a.loss in ("adaptive-layer", "2d-matryoshka"):
            loss = AdaptiveLayerLoss(loss or base, n, n_layers_per_step=a.n_layers_per_step,
                                     last_layer_weight=a.last_layer_weight, prior_layers_weight=a.prior_layers_weight,
                                     kl_div_weight=a.kl_div_weight, kl_temperature=a.kl_temperature,
                                     exit_layers=a.exit_layers)
            self.model.exit_layers = sorted(set(loss.prior) | {n}, reverse=True)
            if a.exit_heads:  # before the optimizer is made, so that it trains them
                self.model.add_exit_heads(loss.prior)
        return loss

    def _check_loss_inputs(self) -> None:
        a = self.args
        if (a.loss in ("mnrl", "cached-mnrl") and min(a.batch_size, len(self.examples)) == 1
                and not a.mine_negatives
                and (a.negatives_per_query == 0 or not any(ex.negatives for ex in self.examples))):
            # one query, one positive, no negatives: the softmax has one entry and the loss is 0
            raise ValueError(f"loss '{a.loss}' contrasts each positive with the other pairs of its batch and with "
                             f"negatives; a batch of one pair without negatives has nothing to contrast (the loss "
                             f"would stay 0): use a batch size of 2 or more, or give negatives")
        if (a.loss == "mse" or a.loss in WRAPPERS and a.base_loss == "mse") and self.teacher is None:
            raise ValueError("loss 'mse' distils a teacher's embeddings: give a teacher model")
        if a.loss == "kl":
            if a.mine_negatives:
                raise ValueError("loss 'kl' needs teacher scores for fixed negatives; it cannot mine them")
            lacking = [i for i, ex in enumerate(self.examples) if not ex.negatives]
            if lacking:
                raise ValueError(f"loss 'kl' needs negatives on every line; example {lacking[0] + 1} has none")
            if self.teacher is None and any(ex.scores is None for ex in self.examples):
                raise ValueError("loss 'kl' needs 'scores' on every line, or a teacher model")

    # -- one step ---------------------------------------------------------------------------

    def _negatives(self, index: int) -> list[str]:
        ex = self.examples[index]
        negatives = [self.pool[i] for i in self.state.mined[index]] if self.state.mined is not None else ex.negatives
        if self.args.negatives_per_query is not None:
            negatives = negatives[:self.args.negatives_per_query]
        return list(negatives)

    def _teacher_embeddings(self, texts: list[str]) -> torch.Tensor:
        vectors = self.teacher.encode(texts, normalize_embeddings=True)
        return torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)).to(self.args.device)

    def compute_loss(self, batch: list[int]) -> torch.Tensor:
        """The batch's loss, with gradients accumulated in the parameters (backward done)."""
        a = self.args
        queries = [self.examples[i].query for i in batch]
        positives = [self.examples[i].positive for i in batch]
        if a.loss in WRAPPERS:
            from .matryoshka import AdaptiveLayerLoss, LossBatch

            negatives = [n for i in batch for n in self._negatives(i)] if a.base_loss != "mse" else []
            if self.loss_fn.cached:
                loss = self.loss_fn(self.biencoder, queries, positives, negatives)
                return loss.detach()
            teacher = ([self._teacher_embeddings(queries), self._teacher_embeddings(positives)]
                       if a.base_loss == "mse" else None)
            step = LossBatch(queries, positives, negatives, teacher)
            embed = self.biencoder.embed_exits if isinstance(self.loss_fn, AdaptiveLayerLoss) else self.biencoder
            loss = self.loss_fn(embed, step)
            loss.backward()
            return loss.detach()
        if a.loss in ("mnrl", "cached-mnrl"):
            negatives = [n for i in batch for n in self._negatives(i)]
            loss = self.loss_fn(self.biencoder, queries, positives, negatives)
            if not self.loss_fn.cached:
                loss.backward()
            return loss.detach()
        if a.loss == "mse":
            loss = mse_distillation_loss([self.biencoder(queries), self.biencoder(positives)],
                                         [self._teacher_embeddings(queries), self._teacher_embeddings(positives)])
            loss.backward()
            return loss.detach()
        # kl: the same number of candidates for every query in the batch
        count = min(len(self._negatives(i)) for i in batch)
        candidates = [[self.examples[i].positive] + self._negatives(i)[:count] for i in batch]
        flat = [t for row in candidates for t in row]
        q = self.biencoder(queries)
        c = self.biencoder(flat).view(len(batch), count + 1, -1)
        if all(self.examples[i].scores is not None for i in batch):
            teacher = torch.tensor([self.examples[i].scores[:count + 1] for i in batch], dtype=torch.float32)
        else:
            tq = self._teacher_embeddings(queries)
            tc = self._teacher_embeddings(flat).view(len(batch), count + 1, -1)
            teacher = torch.einsum("bd,bnd->bn", tq, tc)
        loss = kl_distillation_loss(q, c, teacher.to(q.device), a.temperature)
        loss.backward()
        return loss.detach()

    def training_step(self, batch: list[int]) -> float:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.compute_loss(batch)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss)

    # -- checkpoints ------------------------------------------------------------------------

    def _trainer_state(self) -> dict:
        s = self.state
        return {"global_step": s.global_step, "epoch": s.epoch, "next_batch": s.next_batch, "mined": s.mined,
                "history": s.history, "total_steps": self.total_steps, "num_examples": len(self.examples),
                "pool_size": len(self.pool) if self.pool is not None else None,
                "args": asdict(self.args)}

    def save_checkpoint(self) -> str:
        os.makedirs(self.output_dir, exist_ok=True)
        path = saving.write_checkpoint(self.output_dir, self.state.global_step, self.model, self.tokenizer_files,
                                       self.optimizer, self.scheduler, rng_state(), self._trainer_state(),
                                       write_more=self._write_st_files)  # a checkpoint is a usable model too
        saving.prune_checkpoints(self.output_dir, self.args.save_total_limit)
        return path

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Restores model, optimizer, scheduler, RNG and data position from a checkpoint folder."""
        from ..nn import MambaModel

        state = saving.read_trainer_state(checkpoint_dir)
        if state.get("num_examples") != len(self.examples):
            raise ValueError(f"{checkpoint_dir} was written for {state.get('num_examples')} training examples, "
                             f"this data has {len(self.examples)}")
        if state.get("mined") is not None and (self.pool is None or len(self.pool) != state.get("pool_size")):
            raise ValueError(f"{checkpoint_dir} holds negatives mined from a pool of {state.get('pool_size')} texts; "
                             f"these arguments and data give another pool")
        if state.get("total_steps") != self.total_steps:
            raise ValueError(f"{checkpoint_dir} was written for a run of {state.get('total_steps')} steps, "
                             f"these arguments make {self.total_steps}")
        weights = MambaModel.from_pretrained(checkpoint_dir).state_dict()
        self.model.load_state_dict(weights)
        device = self.args.device
        self.optimizer.load_state_dict(torch.load(os.path.join(checkpoint_dir, saving.OPTIMIZER_FILE),
                                                  map_location=device, weights_only=False))
        self.scheduler.load_state_dict(torch.load(os.path.join(checkpoint_dir, saving.SCHEDULER_FILE),
                                                  weights_only=False))
        set_rng_state(torch.load(os.path.join(checkpoint_dir, saving.RNG_FILE), weights_only=False))
        self.state = TrainState(global_step=state["global_step"], epoch=state["epoch"],
                                next_batch=state["next_batch"], mined=state.get("mined"),
                                history=list(state.get("history", [])))

    def save_model(self, folder: str | None = None) -> str:
        """The trained model as an HF folder with its tokenizer and sentence-transformers' module
        files (MambaEncoder / transformers / sentence-transformers load it), written file by file
        atomically."""
        folder = folder or self.output_dir
        saving.save_model_files(self.model, self.tokenizer_files, folder, write_more=self._write_st_files)
        return folder

    def _write_st_files(self, folder: str) -> None:
        """sentence-transformers' module files and a tokenizer that appends EOS, so that
        SentenceTransformer(folder) embeds as the trained model does: last token, normalised,
        the training max_length as max_seq_length."""
        from ..integrations.sentence_transformers import write_eos_tokenizer, write_module_files

        write_eos_tokenizer(self.biencoder.tokenizer, folder, self.args.max_length)
        write_module_files(folder, hidden_size=self.model.config.hidden_size, max_seq_length=self.args.max_length)

    # -- the loop ---------------------------------------------------------------------------

    def evaluate(self) -> float | None:
        if self.dev is None:
            return None
        return dev_ndcg(self.biencoder, self.dev)

    def _progress(self):
        show = self.args.show_progress_bar
        if show is None:
            try:
                show = sys.stderr.isatty()
            except (AttributeError, ValueError):
                show = False
        if not show:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.total_steps, initial=self.state.global_step, desc="Training", unit="step")

    def train(self, resume_from: str | None = None) -> TrainState:
        a = self.args
        seed_everything(a.seed)
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        bar = self._progress()
        log = bar.write if bar is not None else self.log  # messages above the bar, not through it
        tokens, started = 0, time.perf_counter()
        s = self.state
        try:
            while s.global_step < self.total_steps and s.epoch < a.epochs:
                if s.next_batch == 0 and a.mine_negatives:
                    s.mined = mine_hard_negative_ids(self.biencoder.encode, self.examples, self.pool,
                                                     a.mine_negatives, a.mine_skip)
                order = epoch_order(len(self.examples), a.seed, s.epoch)
                while s.next_batch < self.steps_per_epoch and s.global_step < self.total_steps:
                    batch = order[s.next_batch * a.batch_size:(s.next_batch + 1) * a.batch_size].tolist()
                    before = self.biencoder.tokens_seen
                    lr = self.scheduler.get_last_lr()[0]
                    loss = self.training_step(batch)
                    tokens += self.biencoder.tokens_seen - before
                    s.global_step += 1
                    s.next_batch += 1
                    end_of_epoch = s.next_batch == self.steps_per_epoch
                    if end_of_epoch:  # the position a checkpoint records: the next epoch's start
                        s.epoch, s.next_batch = s.epoch + 1, 0
                    record = {"step": s.global_step, "loss": loss, "lr": lr}
                    if self.dev is not None and a.eval_steps and s.global_step % a.eval_steps == 0:
                        record["ndcg@10"] = self.evaluate()
                        log(f"step {s.global_step}: dev nDCG@10 {record['ndcg@10']:.4f}")
                    s.history.append(record)
                    if bar is not None:
                        rate = tokens / max(time.perf_counter() - started, 1e-9)
                        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{rate:,.0f}", refresh=False)
                        bar.update(1)
                    if a.save_steps and s.global_step % a.save_steps == 0 and s.global_step < self.total_steps:
                        self.save_checkpoint()
                    if end_of_epoch:
                        break
        finally:
            if bar is not None:
                bar.close()
        self.seconds = time.perf_counter() - started
        self.tokens = tokens
        if self.dev is not None and not (a.eval_steps and s.history and "ndcg@10" in s.history[-1]):
            final = self.evaluate()
            if s.history:
                s.history[-1]["ndcg@10"] = final
            self.log(f"step {s.global_step}: dev nDCG@10 {final:.4f}")
        return s
