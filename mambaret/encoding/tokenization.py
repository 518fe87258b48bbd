"""Texts -> packed token batches: HF `tokenizers`, EOS appended, truncation counted."""
from __future__ import annotations

import functools
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

EOS_TOKEN_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>")


@dataclass
class TruncationStats:
    """Inputs encoded, how many were cut to max_length, and the tokens passed to the engine.

    A long text is tokenized only as far as max_length needs, so how many tokens its cut-off
    tail held is not known and not counted."""

    truncated: int = 0
    seen: int = 0
    tokens_kept: int = 0

    def record(self, kept: int, truncated: bool) -> None:
        self.seen += 1
        self.tokens_kept += kept
        if truncated:
            self.truncated += 1


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


def token_budget_batches(ids: Sequence[Sequence[int]], batch_size: int, max_tokens: int):
    """(start, end, PackedBatch) over ids[start:end] in input order: at least batch_size inputs
    per call, and more until a call holds max_tokens tokens, so every call fills at least one
    micro-batch of the engine. The one batching rule of the CPU and GPU paths."""
    start = 0
    while start < len(ids):
        end, tokens = start, 0
        while end < len(ids) and (end - start < batch_size or tokens < max_tokens):
            tokens += len(ids[end])
            end += 1
        yield start, end, PackedBatch.from_lists(ids[start:end])
        start = end


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


# A text cut just before an ASCII whitespace character that follows a non-whitespace one
# tokenizes, up to the cut, exactly as the whole text does (see _cuts_cleanly).
_CLEAN_CUT = re.compile(r"\S(?=[ \t\n\r])")
# With max_length, texts longer than this many characters per allowed token are first tokenized
# only up to a clean cut past that many characters (GPT-NeoX averages about 4 per token).
PREFIX_CHARS_PER_TOKEN = 8


def _cuts_cleanly(tokenizer) -> bool:
    """Whether a text cut cleanly (see _CLEAN_CUT) gives the whole text's first tokens.

    True for byte-level BPE with the GPT-2 split pattern (GPT-NeoX, GPT-2, the Mamba
    checkpoints): no piece of that pattern holds a non-whitespace character followed by a
    whitespace one, so the cut is a piece boundary in both texts and the pieces before it are
    the same; BPE works within pieces; NFC never composes across ASCII whitespace; and no added
    token may span the cut or swallow the whitespace after it. Any other tokenizer is
    tokenized whole."""
    try:
        spec = json.loads(tokenizer.to_str())
    except Exception:  # a tokenizer that cannot describe itself is tokenized whole
        return False
    normalizer, pre, model = spec.get("normalizer"), spec.get("pre_tokenizer"), spec.get("model") or {}
    if normalizer is not None and normalizer.get("type") != "NFC":
        return False
    if not pre or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True):
        return False
    if model.get("type") != "BPE" or model.get("dropout"):
        return False
    for token in spec.get("added_tokens") or []:
        if token.get("rstrip") or token.get("single_word") or re.search(r"\S\s", token.get("content", "")):
            return False
    return True


def _clean_cut_after(text: str, position: int) -> int | None:
    """The first clean cut at or after position, or None when there is none."""
    found = _CLEAN_CUT.search(text, max(position - 1, 0))
    return found.end() if found else None


class TextTokenizer:
    """Wraps a `tokenizers.Tokenizer`; appends EOS and applies the truncation rule
    `ids[:max_length-1] + [eos]`. With max_length, a long text is tokenized only as far as
    the rule needs, with the same ids as tokenizing it whole."""

    def __init__(self, tokenizer, eos_token_id: int):
        self.tokenizer = tokenizer
        self.eos_token_id = int(eos_token_id)
        self.warned_unknown = False
        # padding and truncation are ours to do; a tokenizer.json may carry either
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    @functools.cached_property
    def cuts_cleanly(self) -> bool:
        """Whether long texts may be tokenized only up to a clean cut (asked once, on first use
        with max_length: the tokenizer's description is a few megabytes of JSON)."""
        return _cuts_cleanly(self.tokenizer)

    @functools.cached_property
    def unknown_token_id(self) -> int | None:
        """The id unknown pieces map to (WordPiece's [UNK]); None for byte-level vocabularies."""
        unknown = getattr(self.tokenizer.model, "unk_token", None)
        return self.tokenizer.token_to_id(unknown) if unknown else None

    def _warn_if_mostly_unknown(self, ids: list[list[int]]) -> None:
        """Warns once per tokenizer when most of a text became unknown pieces: a vocabulary that
        does not cover the text's script (the default model's is English) embeds it as noise."""
        unknown = self.unknown_token_id
        if self.warned_unknown or unknown is None:
            return
        for i, row in enumerate(ids):
            if len(row) and 2 * row.count(unknown) > len(row):
                self.warned_unknown = True
                warnings.warn(f"input {i}: {row.count(unknown)} of its {len(row)} tokens are unknown to this "
                              f"model's vocabulary; its embedding carries little meaning (the default model "
                              f"knows English text; this is said once)", UserWarning, stacklevel=5)
                return

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

    def _encode_batch(self, texts: list[str]) -> list[list[int]]:
        try:
            return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]
        except Exception as exc:  # tokenizers raises a bare Exception when its own file is inconsistent
            _check_encodable(texts)  # a lone surrogate: name the input rather than tokenizers' type error
            source = f" {self.path!r}" if getattr(self, "path", None) else ""
            raise ValueError(f"the tokenizer{source} cannot encode these texts: {exc}") from None

    def encode(self, texts: Sequence[str], max_length: int | None, stats: TruncationStats) -> list[list[int]]:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts must be str, item {i} is {type(text).__name__}")
        if max_length is None or not self.cuts_cleanly:
            ids = self._encode_batch(list(texts))
            self._warn_if_mostly_unknown(ids)
            return [apply_eos(x, self.eos_token_id, max_length, stats) for x in ids]
        budget = PREFIX_CHARS_PER_TOKEN * max_length + 64
        cut_at: dict[int, int] = {}
        pieces = list(texts)
        for i, text in enumerate(texts):
            if len(text) > budget:
                cut = _clean_cut_after(text, budget)
                if cut is not None:
                    cut_at[i] = cut
                    pieces[i] = text[:cut]
        ids = self._encode_batch(pieces)
        for i, cut in cut_at.items():
            # max_length tokens before the cut show that the whole text is over the limit;
            # with fewer, cut twice as far (or tokenize it whole) and look again
            while len(ids[i]) < max_length:
                cut = _clean_cut_after(texts[i], 2 * cut) if 2 * cut < len(texts[i]) else None
                ids[i] = self._encode_batch([texts[i] if cut is None else texts[i][:cut]])[0]
                if cut is None:
                    break
        self._warn_if_mostly_unknown(ids)
        return [apply_eos(x, self.eos_token_id, max_length, stats) for x in ids]


def _check_encodable(texts: Sequence[str]) -> None:
    """A ValueError naming the first text that is not valid Unicode (a lone surrogate, as
    decoding with errors="surrogateescape" leaves), which tokenizers cannot take."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"input {i} is not valid Unicode: a lone surrogate {text[exc.start]!r} at character "
                             f"{exc.start}; decode its bytes with errors='replace' or drop the character") from None


def apply_eos(ids: Sequence[int] | np.ndarray, eos: int, max_length: int | None,
              stats: TruncationStats) -> list[int] | np.ndarray:
    """ids + [eos], cut to max_length as ids[:max_length-1] + [eos]; an int32 array stays one."""
    keep = len(ids)
    truncated = max_length is not None and keep + 1 > max_length
    if truncated:
        keep = max_length - 1
    stats.record(keep + 1, truncated)
    if isinstance(ids, np.ndarray):
        return np.concatenate([ids[:keep], np.array([eos], dtype=ids.dtype)])
    return list(ids[:keep]) + [eos]


def truncate_ids(ids: Sequence[int] | np.ndarray, max_length: int | None,
                 stats: TruncationStats) -> list[int] | np.ndarray:
    """Token-id input is used as given, only cut to its first max_length ids."""
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids = ids[:max_length]
    stats.record(len(ids), truncated)
    return ids if isinstance(ids, np.ndarray) else list(ids)


def warn_truncation(count: int, total: int, max_length: int) -> None:
    if count:
        warnings.warn(f"{count} of {total} inputs were longer than max_length={max_length} tokens and were "
                      f"truncated", UserWarning, stacklevel=3)
