"""Encoding whole corpora: in chunks, optionally streamed to a .npy on disk, with throughput."""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from .tokenization import warn_truncation
from .._atomic import atomic_path


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
    """Encodes `count` documents chunk by chunk, as encoder.encode_document does (the model's
    document prompt, when it has one, applies; prompt_name= or prompt= choose another).

    With out_path, embeddings stream into a memory-mapped .npy (float32 [count, d]) so only one
    chunk of activations is ever held; the returned array is that memory map. Without it they
    are collected in memory. The progress bar shows on a terminal (show_progress_bar=None) or
    when asked for; documents cut to max_length are counted in encoder.truncation and warned
    about once.
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
    from .encoder import _is_interactive

    count = out.shape[0]
    progress = None
    if show_progress_bar or (show_progress_bar is None and _is_interactive()):
        from tqdm.auto import tqdm

        progress = tqdm(total=count, desc="Encoding corpus", unit="doc")
        # about 50 updates, in whole batches
        chunk_size = min(chunk_size, batch_size * max(1, -(-count // (50 * batch_size))))
    stats = encoder.truncation
    tokens_before, truncated_before = stats.tokens_kept, stats.truncated
    done = 0
    start = time.perf_counter()
    for chunk in _chunks(texts, chunk_size):
        if done + len(chunk) > count:
            raise ValueError(f"the corpus holds more than the {count} texts announced")
        with warnings.catch_warnings():  # one warning for the whole corpus, below
            warnings.filterwarnings("ignore", message=r".* inputs were longer than max_length", category=UserWarning)
            out[done:done + len(chunk)] = encoder.encode_document(chunk, batch_size=batch_size, show_progress_bar=False,
                                                                  normalize_embeddings=normalize_embeddings,
                                                                  **encode_kwargs)
        done += len(chunk)
        if progress is not None:
            progress.update(len(chunk))
    seconds = time.perf_counter() - start
    if progress is not None:
        progress.close()
    if done != count:
        raise ValueError(f"the corpus held {done} texts, {count} were announced")
    if encoder.max_length is not None:
        warn_truncation(stats.truncated - truncated_before, done, encoder.max_length)
    return EncodeReport(documents=done, tokens=stats.tokens_kept - tokens_before, seconds=seconds, path=out_path)


def text_lines(path: str) -> Sequence[str]:
    """A plain-text corpus: one document per non-empty line."""
    from ..evaluation.datasets import utf8_lines

    return [line.rstrip("\n") for _, line in utf8_lines(path) if line.strip()]
