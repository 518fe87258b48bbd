"""Sections of reStructuredText documentation (the `_sources/*.rst.txt` that Sphinx ships beside
its HTML, as python3.11-doc and linux-doc do): a section title is the query and its text the
passage. Python's API entries (``.. function:: open(file, ...)`` and its indented description)
are pairs of their own. Literal blocks, tables and markup are dropped."""
from __future__ import annotations

import glob
import gzip
import os
import re
from typing import Iterator, List, Tuple

from .text import squash

_ADORNMENT = re.compile(r"^([=\-~^\"'`#*+:._])\1{2,}\s*$")
_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::\s*(.*)$")
_API = {"function", "method", "class", "exception", "attribute", "data", "decorator", "classmethod",
        "staticmethod", "coroutinefunction", "coroutinemethod", "py:function", "py:method", "py:class",
        "c:function", "c:macro", "c:type", "c:member"}
_SKIP_BODY = {"code-block", "code", "sourcecode", "literalinclude", "toctree", "image", "figure",
              "highlight", "kernel-doc", "raw", "doctest", "testcode", "testoutput", "productionlist",
              "index", "module", "moduleauthor", "sectionauthor", "currentmodule", "flat-table",
              "list-table", "csv-table", "table", "graphviz", "only", "include", "audit-event", "opcode",
              "cmdoption", "envvar", "program", "option", "describe", "tabularcolumns", "contents"}
_ROLE = re.compile(r":[\w:+-]+:`([^`<]*?)\s*(?:<[^>]*>)?`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^>]*>`_+")
_INLINE = [(re.compile(r"``([^`]+)``"), r"\1"), (re.compile(r"\*\*([^*]+)\*\*"), r"\1"),
           (re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*"), r"\1"), (re.compile(r"`([^`]+)`_*"), r"\1"),
           (re.compile(r"\|([\w -]+)\|"), r"\1"), (re.compile(r"\[#?\w*\]_"), "")]
_TABLE_RULE = re.compile(r"^\s*[+|=\-\s]+$")
_MODULE = re.compile(r"^\.\. (?:py:)?module:: ([\w.]+)", re.M)


def source_files(root: str) -> List[str]:
    """The .rst.txt (or .rst.gz / .rst) files under ``root``, sorted."""
    files = []
    for pattern in ("**/*.rst.txt", "**/*.rst.gz", "**/*.rst"):
        files.extend(glob.glob(os.path.join(root, pattern), recursive=True))
    return sorted(set(files))


def _read(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def inline_text(text: str) -> str:
    text = _ROLE.sub(lambda m: m.group(1).lstrip("~!"), text)
    text = _LINK.sub(r"\1", text)
    for pattern, replacement in _INLINE:
        text = pattern.sub(replacement, text)
    return squash(text)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _headings(lines: List[str]) -> List[Tuple[int, int, str]]:
    """(first line, first body line, title) of each section heading, with or without an overline."""
    found, i = [], 0
    while i < len(lines) - 1:
        line, below = lines[i], lines[i + 1]
        if (line.strip() and not _ADORNMENT.match(line) and _ADORNMENT.match(below)
                and len(below.strip()) >= len(line.strip()) - 1 and _indent(line) == 0):
            start = i - 1 if i > 0 and _ADORNMENT.match(lines[i - 1]) else i
            found.append((start, i + 2, line.strip()))
            i += 2
            continue
        i += 1
    return found


def _body_text(lines: List[str], api_pairs: list, page: str) -> str:
    """The prose of a section's lines; API directives' descriptions also go to ``api_pairs``."""
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        directive = _DIRECTIVE.match(line)
        if directive or line.rstrip().endswith("::"):
            base = _indent(line)
            j = i + 1
            argument_lines = [directive.group(3)] if directive else []
            while argument_lines and argument_lines[-1].endswith("\\") and j < len(lines):
                argument_lines[-1] = argument_lines[-1][:-1]
                argument_lines.append(lines[j].strip())  # a signature continued over lines
                j += 1
            body = []
            while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
                body.append(lines[j])
                j += 1
            if directive:
                name, argument = directive.group(2), " ".join(argument_lines)
                body = [b for b in body if not re.match(r"^\s*:[\w-]+:", b)]  # directive options
                if name in _API:
                    description = _body_text(body, api_pairs, page)
                    if argument:
                        api_pairs.append((squash(argument), description, page))
                    out.append(squash(argument) + " " + description)
                elif name not in _SKIP_BODY:
                    out.append(_body_text(body, api_pairs, page))
            else:
                before = line.rstrip()[:-2]  # "text::" keeps "text:", a bare "::" nothing
                if before.strip():
                    out.append(before + ":")
            i = j
            continue
        if line.lstrip().startswith(".. "):  # comments, targets, substitutions
            i += 1
            while i < len(lines) and lines[i].strip() and _indent(lines[i]) > _indent(line):
                i += 1
            continue
        if not _TABLE_RULE.match(line) and not line.lstrip().startswith((">>>", "...")):
            out.append(line)
        i += 1
    return inline_text(" ".join(out))


def read_pairs(root: str, origin: str, exclude: Tuple[str, ...] = ()) -> Iterator[Tuple[str, str, str]]:
    """(title, text, origin) per section of every page under ``root``; API entries follow each page
    as (signature, description, origin + '-api'). Paths under ``exclude`` (relative) are skipped."""
    for path in source_files(root):
        if os.path.relpath(path, root).startswith(exclude):
            continue
        lines = _read(path).splitlines()
        headings = _headings(lines)
        if not headings:
            continue
        page = inline_text(headings[0][2])
        api_pairs: list = []
        relative = os.path.relpath(path, root)
        for n, (_, body_start, title) in enumerate(headings):
            end = headings[n + 1][0] if n + 1 < len(headings) else len(lines)
            text = _body_text(lines[body_start:end], api_pairs, page)
            title = inline_text(title)
            query = title if n == 0 or title == page else f"{title} ({page})"
            yield query, text, f"{origin}:{relative}"
        module = _MODULE.search("\n".join(lines))
        for signature, description, _ in api_pairs:
            if module and not signature.startswith(module.group(1)) and not signature[:1].isupper():
                signature = f"{module.group(1)}.{signature}"
            yield signature, description, f"{origin}-api:{relative}"
