"""Small models, tokenizers and data for the training tests (word-level vocabularies keep the
embedding tables tiny, so a few hundred steps take seconds)."""
from __future__ import annotations

import json
import os
import random

from mambaret.arch.random_model import write_random_model

COMMON = [f"c{i}" for i in range(100)]
RARE = [f"r{i}" for i in range(60)]


def write_word_tokenizer(path: str, words) -> int:
    """A whitespace word-level tokenizer.json with <|endoftext|> = 0; returns its size."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "[UNK]": 1}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(path)
    return len(vocab)


def write_tiny_model(folder: str, seed: int = 0, hidden_size: int = 16, num_hidden_layers: int = 2,
                     state_size: int = 4, **config) -> str:
    """A seeded random Mamba checkpoint with the word-level tokenizer over COMMON + RARE."""
    os.makedirs(folder, exist_ok=True)
    vocab = write_word_tokenizer(os.path.join(folder, "tokenizer.json"), COMMON + RARE)
    return write_random_model(folder, seed=seed, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                              vocab_size=vocab, state_size=state_size, **config)


def synthetic_pairs(count: int, seed: int = 0, negatives: int = 0, offset: int = 0):
    """(query, positive, negatives) texts whose query and positive share two rare words among
    common filler; pair combinations never repeat, so held-out pairs are new combinations."""
    rng = random.Random(seed)
    combos = sorted({tuple(sorted(rng.sample(RARE, 2))) for _ in range(count * 8)})
    rng.shuffle(combos)
    out = []
    for a, b in combos[offset:offset + count]:
        query = rng.sample(COMMON, 3) + [a, b]
        positive = rng.sample(COMMON, 6) + [a, b]
        rng.shuffle(query)
        rng.shuffle(positive)
        negs = [" ".join(rng.sample(COMMON, 6) + rng.sample(RARE, 2)) for _ in range(negatives)]
        out.append((" ".join(query), " ".join(positive), negs))
    return out


def write_pairs_jsonl(path: str, pairs) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for query, positive, negatives in pairs:
            line = {"query": query, "positive": positive}
            if negatives:
                line["negatives"] = negatives
            f.write(json.dumps(line) + "\n")
    return path


def write_checkpoints_until_killed(folder: str, model_dir: str, started) -> None:
    """Saves checkpoints 1, 2, 3, ... (every parameter set to step % 3, the trainer state saying
    so) and keeps the newest two, until the process is killed; `started` is set after the first."""
    import torch

    from mambaret.train import linear_schedule, load_model, make_optimizer
    from mambaret.train import saving

    model = load_model(model_dir)
    optimizer = make_optimizer(model, lr=1e-3)
    scheduler = linear_schedule(optimizer, 10, 1)
    step = 0
    while True:
        step += 1
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(step % 3)
        saving.write_checkpoint(folder, step, model, [], optimizer, scheduler, {"step": step},
                                {"global_step": step, "version": step % 3})
        saving.prune_checkpoints(folder, 2)
        started.set()
