"""Dictionaries in the dictd format (an .index of headword / offset / length in dictd's base64,
and a dictzip'ed .dict that gzip reads): the headword is the query, its definition the passage."""
from __future__ import annotations

import gzip
import os
import re
from typing import Iterator, Tuple

from .text import squash

DICTD = "/usr/share/dictd"
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_MARKUP = re.compile(r"[{}]")
_WEBSTER = re.compile(r"\[(1913 Webster|PJC|WordNet 1\.5|Century Dict\.|Webster 1913 Suppl\.)[^\]]*\]")


def _decode(number: str) -> int:
    value = 0
    for c in number:
        value = value * 64 + _B64[c]
    return value


def _definition(name: str, headword: str, entry: str) -> str:
    lines = entry.splitlines()
    if name == "devil":
        # "GLUTTON, n.  A person who ..." : the text begins on the headword's line
        text = re.sub(r"^[^,]*,\s*[a-z.]+\s+", "", " ".join(lines), count=1)
    elif name == "gcide":
        text = " ".join(lines[1:])  # the first line is the headword with its pronunciation
    else:
        # headword lines (FOLDOC and VERA repeat it in several spellings) are not indented
        body = [line for line in lines if line.startswith((" ", "\t"))]
        text = " ".join(body) if body else " ".join(lines[1:])
    text = _WEBSTER.sub("", _MARKUP.sub("", text))
    return squash(text)


def read_pairs(name: str, folder: str = DICTD) -> Iterator[Tuple[str, str, str]]:
    """(headword, definition, origin) of each entry of dictionary ``name`` (gcide, wn, ...)."""
    with gzip.open(os.path.join(folder, f"{name}.dict.dz")) as f:
        data = f.read()
    seen = set()
    with open(os.path.join(folder, f"{name}.index"), encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
                continue
            offset, length = _decode(parts[1]), _decode(parts[2])
            if offset in seen:  # several headwords may point at one entry
                continue
            seen.add(offset)
            entry = data[offset:offset + length].decode("utf-8", errors="replace")
            yield squash(parts[0]), _definition(name, parts[0], entry), f"dict-{name}:{parts[0]}"
