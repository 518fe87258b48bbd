"""Encoding whole corpora: in chunks, optionally streamed to a .npy on disk, with throughput."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from ._atomic import atomic_path


@dataclass
class EncodeReport:
    """What an encoding run did and how fast."""

    documents: int
    tokens: int
    seconds: float
    path: str | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("inf")

    @property
    def documents_per_second(self) -> float:
        return self.documents / self.seconds if self.seconds > 0 else float("inf")


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def encode_corpus(encoder, texts: Iterable[str], count: int, out_path: str | None = None, *,
                  chunk_size: int = 4096, batch_size: int = 32, show_progress_bar: bool | None = None,
                  normalize_embeddings: bool = False, **encode_kwargs) -> tuple[np.ndarray, EncodeReport]:
    """Encodes `count` texts chunk by chunk.

    With out_path, embeddings stream into a memory-mapped .npy (float32 [count, d]) so only one
    chunk of activations is ever held; the returned array is that memory map. Without it they
    are collected in memory.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    dim = encoder.get_sentence_embedding_dimension()
    fill = dict(chunk_size=chunk_size, batch_size=batch_size, show_progress_bar=show_progress_bar,
                normalize_embeddings=normalize_embeddings, **encode_kwargs)
    if out_path is None:
        out = np.empty((count, dim), dtype=np.float32)
        return out, _fill(encoder, texts, out, None, **fill)
    directory = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"output folder {directory!r} does not exist")
    # written beside the target and renamed over it when complete, so an interrupted run never
    # leaves a half-written file under the name (see mambaret._atomic)
    with atomic_path(out_path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(count, dim))
        report = _fill(encoder, texts, out, out_path, **fill)
        out.flush()
        del out
    return np.load(out_path, mmap_mode="r+"), report


def _fill(encoder, texts: Iterable[str], out: np.ndarray, out_path: str | None, *, chunk_size: int,
          batch_size: int, show_progress_bar: bool | None, normalize_embeddings: bool,
          **encode_kwargs) -> EncodeReport:
    count = out.shape[0]
    progress = None
    if show_progress_bar or (show_progress_bar is None and count > 4 * chunk_size):
        from tqdm.auto import tqdm

        progress = tqdm(total=count, desc="Encoding corpus", unit="doc")
    tokens = done = 0
    start = time.perf_counter()
    for chunk in _chunks(texts, chunk_size):
        if done + len(chunk) > count:
            raise ValueError(f"the corpus holds more than the {count} texts announced")
        ids = encoder.tokenize(chunk)
        tokens += sum(len(x) for x in ids)
        out[done:done + len(chunk)] = encoder.encode(ids, batch_size=batch_size, show_progress_bar=False,
                                                     normalize_embeddings=normalize_embeddings, **encode_kwargs)
        done += len(chunk)
        if progress is not None:
            progress.update(len(chunk))
    seconds = time.perf_counter() - start
    if progress is not None:
        progress.close()
    if done != count:
        raise ValueError(f"the corpus held {done} texts, {count} were announced")
    return EncodeReport(documents=done, tokens=tokens, seconds=seconds, path=out_path)


def text_lines(path: str) -> Sequence[str]:
    """A plain-text corpus: one document per non-empty line."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]
