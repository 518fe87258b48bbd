"""Manual pages (man(7) macros): the NAME line is the query, the DESCRIPTION section the passage.
Only the pages that a fixed list of packages installs are read (`dpkg -L`), so the pairs do not
depend on whatever else a machine has installed. Pages in mdoc(7) form and `.so` redirections are
left out."""
from __future__ import annotations

import gzip
import os
import re
import subprocess
from typing import Iterator, List, Tuple

from .text import squash

_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),          # font changes
    (re.compile(r"\\s[-+]?\d"), ""),                        # size changes
    (re.compile(r"\\\((em|en)"), " - "),
    (re.compile(r"\\\((lq|rq|dq)"), '"'),
    (re.compile(r"\\\((aq|oq|cq)"), "'"),
    (re.compile(r"\\\*\((lq|rq)"), '"'),
    (re.compile(r"\\\*\[[^\]]*\]|\\\*\(..|\\\*."), ""),   # strings
    (re.compile(r"\\\[[^\]]*\]|\\\(.."), ""),              # other named glyphs
    (re.compile(r"\\[-]"), "-"),
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\[&c|^%:]"), ""),
    (re.compile(r"\\ "), " "),
    (re.compile(r'\\".*$'), ""),                            # comments
]
_FONT_MACROS = {"B", "I", "BR", "RB", "IR", "RI", "BI", "IB", "SM", "SB"}
_ALTERNATING = {"BR", "RB", "IR", "RI", "BI", "IB"}
_TEXT_MACROS = {"SS", "TP", "IP", "HP", "PP", "P", "LP", "TQ"}


def package_pages(packages: List[str]) -> List[str]:
    """The English manual pages (/usr/share/man/manN/) that ``packages`` install, sorted."""
    pages = []
    for package in packages:
        listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
        if listing.returncode != 0:
            continue
        for path in listing.stdout.splitlines():
            if re.match(r"^/usr/share/man/man[1-9][^/]*/[^/]+$", path) and os.path.isfile(path) \
                    and not os.path.islink(path):
                pages.append(path)
    return sorted(set(pages))


def _args(rest: str) -> List[str]:
    out, current, quoted = [], "", False
    for ch in rest:
        if ch == '"':
            quoted = not quoted
        elif ch == " " and not quoted:
            if current:
                out.append(current)
            current = ""
        else:
            current += ch
    if current:
        out.append(current)
    return out


def _unescape(text: str) -> str:
    for pattern, replacement in _ESCAPES:
        text = pattern.sub(replacement, text)
    return text


def _sections(source: str) -> dict:
    """{section name: plain text} of a man(7) page."""
    sections, name, lines = {}, None, []
    joined = re.sub(r"\\\n", "", source)  # continued lines
    for line in joined.splitlines():
        if line.startswith((".", "'")):
            macro, _, rest = line[1:].strip().partition(" ")
            if macro == "SH":
                if name is not None:
                    sections[name] = lines
                name, lines = squash(rest.replace('"', "")).upper(), []
                continue
            if macro in _FONT_MACROS:
                args = _args(rest)
                lines.append(("" if macro in _ALTERNATING else " ").join(args))
            elif macro in _TEXT_MACROS and rest:
                lines.append(" ".join(_args(rest)))
            continue  # layout requests (.nf, .RS, .br, .sp, ...) carry no text
        lines.append(line)
    if name is not None:
        sections[name] = lines
    return {key: squash(_unescape(" ".join(value))) for key, value in sections.items()}


def read_page(path: str) -> Tuple[str, str] | None:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        source = f.read()
    if source.lstrip().startswith(".so ") or re.search(r"^\.Dd\b|^\.Sh\b", source, re.M):
        return None
    sections = _sections(source)
    name, description = sections.get("NAME", ""), sections.get("DESCRIPTION", "")
    if not name or not description:
        return None
    return name, description


def read_pairs(packages: List[str]) -> Iterator[Tuple[str, str, str]]:
    for path in package_pages(packages):
        page = read_page(path)
        if page is not None:
            yield page[0], page[1], "man:" + os.path.basename(path)
