"""Debian package descriptions: the one-line summary is the query, the long description the
passage. Read from the Translation-en lists that `apt-get -o Acquire::Languages=en update` puts
under /var/lib/apt/lists (compressed; apt's own helper decompresses whatever the format)."""
from __future__ import annotations

import glob
import os
import subprocess
from typing import Iterator, Tuple

from .text import squash

LISTS = "/var/lib/apt/lists"
APT_HELPER = "/usr/lib/apt/apt-helper"
_SKIP_SUMMARY = ("transitional", "dummy package", "metapackage", "meta-package", "debug symbols",
                 "debugging symbols")


def translation_files(lists_dir: str = LISTS) -> list:
    return sorted(glob.glob(os.path.join(lists_dir, "*_i18n_Translation-en*")))


def _read_list(path: str) -> str:
    return subprocess.run([APT_HELPER, "cat-file", path], check=True, capture_output=True).stdout.decode(
        "utf-8", errors="replace")


def _stanzas(text: str) -> Iterator[dict]:
    for block in text.split("\n\n"):
        fields, key = {}, None
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and key is not None:
                fields[key].append(line)
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = [value.strip()]
        if fields:
            yield fields


def _long_description(lines: list) -> str:
    # " ." separates paragraphs; lines that start with two spaces are verbatim (lists, code)
    paragraphs, current = [], []
    for line in lines:
        body = line[1:]
        if body.strip() == ".":
            paragraphs.append(" ".join(current))
            current = []
        else:
            current.append(body.strip())
    paragraphs.append(" ".join(current))
    return "\n".join(squash(p) for p in paragraphs if p.strip())


def read_pairs(lists_dir: str = LISTS) -> Iterator[Tuple[str, str, str]]:
    """(query, positive, origin) for every distinct description in the lists."""
    seen = set()
    for path in translation_files(lists_dir):
        for fields in _stanzas(_read_list(path)):
            description = fields.get("Description-en")
            if not description:
                continue
            md5 = fields.get("Description-md5", [""])[0]
            if md5 and md5 in seen:
                continue
            seen.add(md5)
            summary = squash(description[0])
            if not summary or any(s in summary.lower() for s in _SKIP_SUMMARY):
                continue
            body = _long_description(description[1:])
            yield summary, body, "debian:" + fields.get("Package", ["?"])[0]
