"""Texts -> packed token batches: HF `tokenizers`, EOS appended, truncation counted."""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

EOS_TOKEN_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>")


@dataclass
class TruncationStats:
    """How many inputs were cut to max_length, over the encoder's lifetime."""

    truncated: int = 0
    seen: int = 0
    tokens_dropped: int = 0

    def record(self, dropped: int) -> None:
        self.seen += 1
        if dropped > 0:
            self.truncated += 1
            self.tokens_dropped += dropped


@dataclass
class PackedBatch:
    """A padding-free batch: sequence i is tokens[offsets[i]:offsets[i+1]]."""

    tokens: np.ndarray  # int32 [T]
    offsets: np.ndarray  # int64 [B + 1]
    lengths: np.ndarray = field(init=False)

    def __post_init__(self):
        self.lengths = np.diff(self.offsets)

    @classmethod
    def from_lists(cls, sequences: Sequence[Sequence[int]]) -> "PackedBatch":
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.empty(int(offsets[-1]), dtype=np.int32)
        for i, seq in enumerate(sequences):
            try:
                tokens[offsets[i]:offsets[i + 1]] = seq
            except OverflowError:
                raise ValueError(f"input {i} holds a token id outside the int32 range") from None
        return cls(tokens, offsets)


def check_poolable(ids: Sequence[Sequence[int]]) -> None:
    """Pooling needs at least one token per input."""
    for i, seq in enumerate(ids):
        if len(seq) == 0:
            raise ValueError(f"input {i} has no tokens: an empty token-id list has nothing to pool")


def _eos_from_tokenizer_config(model_dir: str) -> str | None:
    path = os.path.join(model_dir, "tokenizer_config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            eos = json.load(f).get("eos_token")
    except (json.JSONDecodeError, OSError, AttributeError):
        return None
    if isinstance(eos, dict):  # {"content": "<|endoftext|>", ...}
        eos = eos.get("content")
    return eos if isinstance(eos, str) else None


class TextTokenizer:
    """Wraps a `tokenizers.Tokenizer`; appends EOS and applies the truncation rule
    `ids[:max_length-1] + [eos]`."""

    def __init__(self, tokenizer, eos_token_id: int):
        self.tokenizer = tokenizer
        self.eos_token_id = int(eos_token_id)
        # padding and truncation are ours to do; a tokenizer.json may carry either
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    @classmethod
    def from_file(cls, path: str, eos_token_id: int | None = None, model_dir: str | None = None) -> "TextTokenizer":
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(path)
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise ValueError(f"cannot read tokenizer {path!r}: {exc}") from None
        eos_id = None
        names = ((_eos_from_tokenizer_config(model_dir),) if model_dir else ()) + EOS_TOKEN_CANDIDATES
        for name in names:
            if name and tok.token_to_id(name) is not None:
                eos_id = tok.token_to_id(name)
                break
        if eos_id is None:
            eos_id = eos_token_id
        if eos_id is None:
            raise ValueError(f"{path}: cannot tell the EOS token (no <|endoftext|> and no eos_token_id in config)")
        loaded = cls(tok, eos_id)
        loaded.path = path  # for error messages
        return loaded

    def encode(self, texts: Sequence[str], max_length: int | None, stats: TruncationStats) -> list[list[int]]:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts must be str, item {i} is {type(text).__name__}")
        try:
            encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        except Exception as exc:  # tokenizers raises a bare Exception when its own file is inconsistent
            source = f" {self.path!r}" if getattr(self, "path", None) else ""
            raise ValueError(f"the tokenizer{source} cannot encode these texts: {exc}") from None
        return [apply_eos(e.ids, self.eos_token_id, max_length, stats) for e in encodings]


def apply_eos(ids: Sequence[int] | np.ndarray, eos: int, max_length: int | None,
              stats: TruncationStats) -> list[int] | np.ndarray:
    """ids + [eos], cut to max_length as ids[:max_length-1] + [eos]; an int32 array stays one."""
    keep = len(ids)
    if max_length is not None and keep + 1 > max_length:
        stats.record(keep + 1 - max_length)
        keep = max_length - 1
    else:
        stats.record(0)
    if isinstance(ids, np.ndarray):
        return np.concatenate([ids[:keep], np.array([eos], dtype=ids.dtype)])
    return list(ids[:keep]) + [eos]


def truncate_ids(ids: Sequence[int] | np.ndarray, max_length: int | None,
                 stats: TruncationStats) -> list[int] | np.ndarray:
    """Token-id input is used as given, only cut to its first max_length ids."""
    if max_length is not None and len(ids) > max_length:
        stats.record(len(ids) - max_length)
        ids = ids[:max_length]
    else:
        stats.record(0)
    return ids if isinstance(ids, np.ndarray) else list(ids)


def warn_truncation(count: int, total: int, max_length: int) -> None:
    if count:
        warnings.warn(f"{count} of {total} inputs were longer than max_length={max_length} tokens and were "
                      f"truncated", UserWarning, stacklevel=3)
