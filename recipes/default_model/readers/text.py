"""Whitespace, truncation and the keys used to find duplicates."""
from __future__ import annotations

import re

_SPACE = re.compile(r"\s+")
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def squash(text: str) -> str:
    """One line, single spaces."""
    return _SPACE.sub(" ", text).strip()


def truncate_words(text: str, max_words: int) -> str:
    """The first ``max_words`` words (the teacher reads 256 word pieces at most anyway)."""
    words = text.split(" ")
    return text if len(words) <= max_words else " ".join(words[:max_words])


def dedup_key(text: str) -> str:
    """Case, punctuation and spacing do not make two texts different."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def word_count(text: str) -> int:
    return len(text.split())
