"""Builds a long-document retrieval collection from reStructuredText manuals (Python's, Linux's).

    python scripts/build_long_docs.py -o ~/.cache/mambaret-bench/long_docs
    python scripts/build_long_docs.py -o OUT --source py=DIR --source linux=DIR --docs-per-bucket 64 --seed 0

Default sources are Debian's python3.11-doc (``/usr/share/doc/python3.11-doc/html/_sources``,
``*.rst.txt``) and linux-doc (``/usr/share/doc/linux-doc-*/Documentation``, ``*.rst.gz``;
``translations/`` left out). Any folder of ``.rst``, ``.rst.txt`` or ``.rst.gz`` files works:
:func:`build_collection` is the whole builder.

How documents are made
    Each file is split at its headings into sections, each section into paragraphs (prose
    paragraphs reflowed to one line; code, tables and lists kept as they are, long ones cut at
    line boundaries). Files are grouped by folder; the groups are shuffled by the seed and read
    one after another as one stream of sections. Each document takes the next whole sections
    of the stream until it holds about its bucket's size in tokens (1k, 2k, 4k, 8k, 16k, 32k;
    GPT-NeoX tokenizer), crossing file boundaries (concatenation); a section that would
    overshoot the bucket by more than ``tolerance`` is cut at a paragraph boundary and its
    remainder starts the next document. The bucket of each next document is drawn by the seed
    in proportion to what each bucket still lacks, so the buckets fill evenly and no text
    appears in two documents.

Queries (each judged relevant, 1, for its one document only)
    ``section_title``      the title of one of the document's whole sections (not the first);
                           the heading line is removed from the document, so the query must
                           match the section's content, not its literal heading.
    ``needle``             a prose sentence held out (removed) from the start (first 10 % of
                           the text), the middle (45-55 %) or the end (last 10 %) of the
                           document; ``needle`` in the metadata says which, ``position`` is
                           where the gap is, as a fraction of the final text's characters.
    ``summary_title``      the document's own title (its first section's heading), removed
                           from the document.
    ``summary_paragraph``  the document's first prose paragraph, removed from the document.
    Titles and sentences used as queries occur once in the whole source material
    (case-insensitively), have at least 2 (titles) or 8 (sentences) words and no ``<`` or
    ``>`` (so TREC topic files stay parseable); query texts have their whitespace collapsed.

Train/test split
    By document, per bucket: a seeded permutation puts ``test_fraction`` of each bucket's
    documents in test; every query goes with its document. The corpus holds every document
    (retrieval for either split runs over all of them).

Collection format (the folder written)
    corpus.jsonl             BEIR: {"_id", "title": "", "text"}
    queries.jsonl            BEIR: {"_id", "text"}, both splits
    qrels/train.tsv, qrels/test.tsv   BEIR: query-id, corpus-id, score (header line)
    corpus.trec              TREC <DOC><DOCNO>...</DOCNO> text </DOC>
    topics.train.trec, topics.test.trec   TREC <top><num>..</num><title>..</title></top>
    qrels.train.txt, qrels.test.txt       TREC qrels: qid 0 docno 1
    docs.jsonl               {"_id", "bucket", "tokens", "split", "source", "files", "sections"};
                             tokens counts the final text, without its held-out pieces
    queries_meta.jsonl       {"_id", "doc", "kind", "needle", "position", "bucket", "split",
                              "tokens" (the document's)}
    stats.json               the build's settings and counts per bucket, kind and split
Read it with ``mambaret.evaluation.datasets.load_beir(folder, split)`` or the TREC loaders, and
:func:`read_query_groups` for the per-bucket / per-position breakdown of
``mambaret.evaluate_by_group``.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import random
import re
import statistics
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

BUCKETS = (1024, 2048, 4096, 8192, 16384, 32768)
KINDS = ("section_title", "needle", "summary_title", "summary_paragraph")
NEEDLE_WINDOWS = {"start": (0.0, 0.10), "middle": (0.45, 0.55), "end": (0.90, 1.0)}
MAX_BLOCK_TOKENS = 256  # code and tables are cut at line boundaries into blocks of at most this
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TOKENIZER = os.path.join(REPO, "..", "shared", "data", "tokenizers", "gpt-neox-20b.json")

TokenCounter = Callable[[List[str]], List[int]]


def bucket_name(tokens: int) -> str:
    """4096 -> "4k"; sizes that are not a multiple of 1024 keep their number."""
    return f"{tokens // 1024}k" if tokens % 1024 == 0 else str(tokens)


# ---------------------------------------------------------------- reading reStructuredText

_ADORNMENT_CHARS = set("=-`:'\"~^_*+#<>.")
# directives whose whole block is markup, not text
_DROP_BLOCK = {"index", "toctree", "contents", "raw", "kernel-doc", "tabularcolumns", "testsetup",
               "testcleanup", "only", "include", "literalinclude", "image", "figure", "highlight",
               "sectionauthor", "moduleauthor", "kernel-feat", "kernel-abi", "kernel-include",
               "maintainers-include", "cssclass", "default-role", "role", "csv-table", "audit-event",
               "audit-event-table", "impl-detail", "program", "currentmodule", "c:namespace",
               "c:namespace-push", "c:namespace-pop", "autosummary", "productionlist", "rst-class",
               "opcode", "availability", "sidebar", "spelling", "SPDX-License-Identifier"}
# directives whose argument is text worth keeping (a signature, a title)
_KEEP_ARGS = {"function", "class", "method", "attribute", "data", "exception", "decorator", "decoratormethod",
              "classmethod", "staticmethod", "abstractmethod", "coroutinefunction", "coroutinemethod", "module",
              "cmdoption", "option", "envvar", "describe", "pdbcommand", "rubric", "topic", "admonition", "table",
              "list-table", "flat-table", "c:function", "c:macro", "c:type", "c:member", "c:var", "c:struct",
              "c:union", "c:enum", "c:enumerator", "c:data"}
# directives whose content is code: kept as a literal block
_CODE = {"code-block", "code", "sourcecode", "doctest", "testcode", "testoutput", "parsed-literal"}
_DIRECTIVE = re.compile(r"^\.\.\s+([A-Za-z][\w:.+-]*)::\s*(.*)$")
_ROLE = re.compile(r":[A-Za-z][\w:.+-]*:`([^`]+)`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^`>]*>`_{1,2}")
_REF = re.compile(r"`([^`]+)`_{1,2}")
_LITERAL = re.compile(r"``([^`]+)``")
_INTERP = re.compile(r"`([^`]+)`")
_STRONG = re.compile(r"\*\*([^*]+)\*\*")
_EMPH = re.compile(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])")
_FOOTREF = re.compile(r"\s*\[(?:#\w*|\*|\d+)\]_")
_SUBST = re.compile(r"\|([^|\s][^|]*?)\|(?:_{1,2})?")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'])")


def _inline(text: str) -> str:
    """Roles, links and emphasis down to their visible text."""
    def role(m):
        inner = m.group(1)
        target = re.match(r"^(.*?)\s*<[^<>]*>$", inner)
        inner = target.group(1) if target and target.group(1) else inner
        return inner.lstrip("~!")
    text = _ROLE.sub(role, text)
    text = _LINK.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _REF.sub(r"\1", text)
    text = _INTERP.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    text = _EMPH.sub(r"\1", text)
    text = _FOOTREF.sub("", text)
    return _SUBST.sub(r"\1", text)


def _is_adornment(line: str) -> bool:
    s = line.rstrip()
    return len(s) >= 3 and s[0] in _ADORNMENT_CHARS and s == s[0] * len(s)


@dataclass
class Section:
    title: str
    paragraphs: List[str]
    prose: List[bool]  # per paragraph: reflowed prose (sentences may be held out of it)
    path: str
    page_title: str
    complete: bool = True  # False for the pieces of a section cut between two documents
    tokens: List[int] = field(default_factory=list)  # per paragraph
    title_tokens: int = 0


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _strip_markup(lines: List[str]) -> List[str]:
    """Drops comments, targets and markup directives (with their indented blocks) at any
    indentation; keeps the arguments of descriptive directives (``.. function:: open(file)`` ->
    ``open(file)``) and the content of the others."""
    out: List[str] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        text = line.lstrip()
        if not text.startswith(".."):
            out.append(line)
            i += 1
            continue
        pad = line[:_indent(line)]
        m = _DIRECTIVE.match(text)
        j = i + 1
        while j < n and (not lines[j].strip() or _indent(lines[j]) > len(pad)):
            j += 1
        if m is None or m.group(1) in _DROP_BLOCK:  # comment, target, footnote or markup block
            if m is None and re.match(r"^\.\.\s+\[[^\]]+\]\s+\S", text):  # footnote text stays
                out.append(pad + re.sub(r"^\.\.\s+\[[^\]]+\]\s+", "", text))
                out.extend(lines[i + 1:j])
            i = j
            continue
        name = m.group(1)
        if name in _KEEP_ARGS and m.group(2).strip():
            out.append(pad + m.group(2).strip())
        k = i + 1  # the directive's option lines go, its content stays
        while k < j and re.match(r"^\s+:[\w-]+:", lines[k]):
            k += 1
        body = lines[k:j]
        out.append("")
        if name in _CODE:  # stays indented under a bare '::', i.e. a literal block
            out += [pad + "::", ""] + body
        else:  # dedented to the directive's place: a note's text reads as the text around it
            cut = min((_indent(b) for b in body if b.strip()), default=0)
            out.extend(_strip_markup([pad + b[cut:] if b.strip() else "" for b in body]))
        i = j
    return out


def _paragraphs(lines: List[str]) -> Tuple[List[str], List[bool]]:
    """Paragraphs (blank-line separated) and whether each is prose. Prose: lines of one
    indentation, starting with a letter, not a list item, field or table, not inside a literal
    block (the more indented paragraphs after one ending in '::')."""
    blocks: List[List[str]] = []
    block: List[str] = []
    for line in lines:
        if line.strip():
            block.append(line.expandtabs(8).rstrip())
        elif block:
            blocks.append(block)
            block = []
    if block:
        blocks.append(block)
    paragraphs: List[str] = []
    prose: List[bool] = []
    literal_above: Optional[int] = None  # indentation of the paragraph that opened a literal block
    for block in blocks:
        indents = [len(b) - len(b.lstrip()) for b in block]
        indent = min(indents)
        in_literal = literal_above is not None and indent > literal_above
        if not in_literal:
            literal_above = None
        first = block[0].strip()
        is_prose = (not in_literal and len(set(indents)) == 1 and first[:1].isalpha()
                    and not block[-1].endswith("::") and not re.match(r"^(\w[.)]\s|[-*+]\s|\||:\w)", first))
        if block[-1].endswith("::") and not in_literal:
            literal_above = indent
            if first == "::":
                continue
            last = block[-1][:-3].rstrip() if block[-1].endswith(" ::") else block[-1][:-1]  # rst's rule
            block = block[:-1] + [last]
        if is_prose:
            text = _inline(" ".join(b.strip() for b in block))
        else:
            text = _inline("\n".join(block))
        if text.strip() and not _is_adornment(text):
            paragraphs.append(text)
            prose.append(is_prose)
    return paragraphs, prose


def parse_rst(text: str, path: str = "") -> List[Section]:
    """Splits one reStructuredText file into sections at its headings (any level)."""
    lines = [line.expandtabs(8) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    headings: List[Tuple[int, int, str]] = []  # (first line, first line after, title)
    i = 0
    while i + 1 < len(lines):
        line, under = lines[i], lines[i + 1]
        text_line = line.strip()
        over = i > 0 and _is_adornment(lines[i - 1])
        if (text_line and not line[:1].isspace() and not _is_adornment(line) and _is_adornment(under)
                and len(under.rstrip()) >= min(len(text_line), 3) and not text_line.startswith("..")
                and (i == 0 or not lines[i - 1].strip() or over)):
            start = i - 1 if over and lines[i - 1].rstrip()[0] == under.rstrip()[0] else i
            headings.append((start, i + 2, _inline(text_line)))
            i += 2
            continue
        i += 1
    if not headings:
        return []
    page_title = headings[0][2]
    sections = []
    for h, (start, body_start, title) in enumerate(headings):
        end = headings[h + 1][0] if h + 1 < len(headings) else len(lines)
        paragraphs, prose = _paragraphs(_strip_markup(lines[body_start:end]))
        if paragraphs:
            sections.append(Section(title, paragraphs, prose, path, page_title))
    return sections


def _read(path: str) -> str:
    if path.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            return f.read().replace("\0", "")
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        return f.read().replace("\0", "")


def find_rst_files(folder: str, exclude: Sequence[str] = ("translations",)) -> List[str]:
    """``.rst``, ``.rst.txt`` and ``.rst.gz`` files under ``folder``, sorted, relative paths;
    any path with a component in ``exclude`` is left out."""
    found = []
    for pattern in ("**/*.rst", "**/*.rst.txt", "**/*.rst.gz"):
        for p in glob.glob(os.path.join(folder, pattern), recursive=True):
            rel = os.path.relpath(p, folder)
            if not any(part in exclude for part in rel.split(os.sep)):
                found.append(rel)
    return sorted(set(found))


def default_sources() -> Dict[str, str]:
    sources = {}
    py = sorted(glob.glob("/usr/share/doc/python3.*-doc/html/_sources"))
    if py:
        sources["py"] = py[-1]
    linux = sorted(glob.glob("/usr/share/doc/linux-doc*/Documentation"))
    if linux:
        sources["linux"] = linux[-1]
    return sources


# ---------------------------------------------------------------- tokens

def neox_token_counter(path: str = DEFAULT_TOKENIZER) -> TokenCounter:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(path)

    def count(texts: List[str]) -> List[int]:
        return [len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return count


def _split_long(paragraph: str, tokens: int) -> List[str]:
    """A code block or table over MAX_BLOCK_TOKENS cut at line boundaries into similar pieces."""
    lines = paragraph.split("\n")
    pieces = max(1, min(len(lines), -(-tokens // MAX_BLOCK_TOKENS)))
    per = -(-len(lines) // pieces)
    return ["\n".join(lines[k:k + per]) for k in range(0, len(lines), per)]


def _count_sections(sections: List[Section], count: TokenCounter) -> None:
    texts = [p for s in sections for p in s.paragraphs] + [s.title for s in sections]
    counts = iter(count(texts)) if texts else iter(())
    for s in sections:
        s.tokens = [next(counts) + 1 for _ in s.paragraphs]  # + the paragraph break
    for s in sections:
        s.title_tokens = next(counts) + 1
    for s in sections:  # non-prose blocks that are too long to move between documents whole
        if any(t > MAX_BLOCK_TOKENS and not pr for t, pr in zip(s.tokens, s.prose)):
            paragraphs, prose, tokens = [], [], []
            for p, pr, t in zip(s.paragraphs, s.prose, s.tokens):
                parts = _split_long(p, t) if t > MAX_BLOCK_TOKENS and not pr else [p]
                paragraphs += parts
                prose += [pr] * len(parts)
                tokens += [t] if len(parts) == 1 else [c + 1 for c in count(parts)]
            s.paragraphs, s.prose, s.tokens = paragraphs, prose, tokens


# ---------------------------------------------------------------- documents

def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _sentences(paragraph: str) -> List[str]:
    return [s for s in _SENTENCE_END.split(paragraph) if s]


def _good_sentence(s: str) -> bool:
    words = s.split()
    letters = sum(c.isalpha() for c in s)
    return (8 <= len(words) <= 60 and s.endswith(".") and "<" not in s and ">" not in s
            and letters >= 0.6 * len(s) and "::" not in s)


def _good_title(t: str) -> bool:
    words = re.findall(r"[A-Za-z]{2,}", t)
    return len(words) >= 2 and "<" not in t and ">" not in t and len(t) <= 200


@dataclass
class _Doc:
    docno: str
    bucket: int
    source: str
    sections: List[Section]
    queries: List[dict] = field(default_factory=list)
    removed_titles: set = field(default_factory=set)  # section indexes whose heading is removed
    removed_spans: Dict[Tuple[int, int], List[str]] = field(default_factory=dict)  # (sec, par) -> sentences

    def render(self, mark: Optional[Tuple[Tuple[int, int], str]] = None) -> str:
        """The text with every held-out piece removed; ``mark`` ((section, paragraph), piece)
        leaves a NUL where that one piece was instead, to locate its gap."""
        parts = []
        for si, s in enumerate(self.sections):
            if si not in self.removed_titles:
                parts.append(s.title)
            for pi, p in enumerate(s.paragraphs):
                for sentence in self.removed_spans.get((si, pi), ()):
                    p = _remove_sentence(p, sentence, "\0" if mark == ((si, pi), sentence) else "")
                if p.strip():
                    parts.append(p)
        return "\n\n".join(parts).strip()  # no leading indentation: TREC readers strip it


def _remove_sentence(paragraph: str, sentence: str, mark: str = "") -> str:
    at = paragraph.find(sentence)
    if at < 0:
        raise AssertionError("held-out sentence not in its paragraph")
    before, after = paragraph[:at].rstrip(), paragraph[at + len(sentence):].lstrip()
    return " ".join(x for x in (before, mark, after) if x)


class _Stream:
    """The sections of all sources, in the seeded order, consumed document by document."""

    def __init__(self, sections: List[Tuple[str, Section]]):
        self.sections = sections
        self.index = 0
        self.first_paragraph = 0  # inside sections[index], after a cut

    def done(self) -> bool:
        return self.index >= len(self.sections)

    def take(self, target: int, tolerance: float) -> Tuple[Optional[str], List[Section]]:
        """The next whole sections up to about ``target`` tokens; None when the stream (or its
        source: documents never mix sources) ran out before ``(1 - tolerance) * target``. Only a
        paragraph longer than the tolerance's window can leave a document outside it."""
        lo, hi = (1 - tolerance) * target, (1 + tolerance) * target
        taken: List[Section] = []
        total = 0
        source = None
        while total < target and not self.done():
            src, s = self.sections[self.index]
            if source is not None and src != source:
                break
            source = src
            pars = range(self.first_paragraph, len(s.paragraphs))
            cost = s.title_tokens + sum(s.tokens[p] for p in pars)
            if total + cost <= hi:
                taken.append(self._piece(s, pars, complete=self.first_paragraph == 0))
                total += cost
                self.index, self.first_paragraph = self.index + 1, 0
                continue
            if total >= lo:
                break
            # cut this section at a paragraph boundary: enough to reach the target, within hi
            total += s.title_tokens
            end = self.first_paragraph
            while end < len(s.paragraphs) and (total < target or end == self.first_paragraph) \
                    and total + s.tokens[end] <= hi:
                total += s.tokens[end]
                end += 1
            if end == self.first_paragraph:  # the next paragraph alone overshoots the bucket
                if taken and abs(total + s.tokens[end] - target) >= abs(total - s.title_tokens - target):
                    total -= s.title_tokens  # closer to the target without it: the document ends here
                    return source, taken
                total += s.tokens[end]
                end += 1
            taken.append(self._piece(s, range(self.first_paragraph, end), complete=False))
            if end >= len(s.paragraphs):
                self.index, self.first_paragraph = self.index + 1, 0
            else:
                self.first_paragraph = end
        if total < lo:
            return None, []
        return source, taken

    @staticmethod
    def _piece(s: Section, pars: range, complete: bool) -> Section:
        return Section(s.title, [s.paragraphs[p] for p in pars], [s.prose[p] for p in pars], s.path, s.page_title,
                       complete=complete and len(pars) == len(s.paragraphs),
                       tokens=[s.tokens[p] for p in pars], title_tokens=s.title_tokens)


def _load_sources(sources: Mapping[str, str], exclude: Sequence[str]) -> Dict[str, List[Tuple[str, List[Section]]]]:
    loaded = {}
    for name, folder in sources.items():
        files = find_rst_files(folder, exclude)
        if not files:
            raise ValueError(f"no .rst, .rst.txt or .rst.gz files under {folder}")
        loaded[name] = [(f"{name}/{rel}", parse_rst(_read(os.path.join(folder, rel)), f"{name}/{rel}"))
                        for rel in files]
    return loaded


def _choose_queries(doc: _Doc, rng: random.Random, title_count, sentence_count) -> None:
    secs = doc.sections
    # summary_title: the document's own title, unique in the whole material
    first = secs[0]
    if first.complete and _good_title(first.title) and title_count[_norm(first.title)] == 1:
        doc.removed_titles.add(0)
        doc.queries.append({"kind": "summary_title", "needle": "", "text": first.title, "at": (0, -1)})
    # section_title: a whole section other than the first, with a unique title
    candidates = [si for si, s in enumerate(secs) if si > 0 and s.complete and _good_title(s.title)
                  and title_count[_norm(s.title)] == 1]
    if candidates:
        si = rng.choice(candidates)
        doc.removed_titles.add(si)
        doc.queries.append({"kind": "section_title", "needle": "", "text": secs[si].title, "at": (si, -1)})
    # summary_paragraph: the first prose paragraph (among the first few), held out
    used_paragraph = None
    for si, s in enumerate(secs[:2]):
        for pi, (p, pr) in enumerate(zip(s.paragraphs[:3], s.prose[:3])):
            words = len(p.split())
            if pr and 10 <= words <= 120 and "<" not in p and ">" not in p \
                    and all(sentence_count[_norm(x)] <= 1 for x in _sentences(p)):
                used_paragraph = (si, pi)
                break
        if used_paragraph:
            break
    if used_paragraph:
        si, pi = used_paragraph
        text = secs[si].paragraphs[pi]
        doc.removed_spans[(si, pi)] = [text]
        doc.queries.append({"kind": "summary_paragraph", "needle": "", "text": text, "at": (si, pi)})
    # needles: one prose sentence from each window, by its character position in the document
    # without the held-out titles and paragraph (the needles' own gaps shift it a little)
    offsets, total = [], 0
    for si, s in enumerate(secs):
        total += 0 if si in doc.removed_titles else len(s.title) + 2
        for pi, (p, pr) in enumerate(zip(s.paragraphs, s.prose)):
            if (si, pi) == used_paragraph:
                continue
            if pr:
                pos = 0
                for sent in _sentences(p):
                    at = p.find(sent, pos)
                    pos = at + len(sent)
                    if _good_sentence(sent) and sentence_count[_norm(sent)] == 1:
                        offsets.append((total + at, si, pi, sent))
            total += len(p) + 2
    for needle, (a, b) in NEEDLE_WINDOWS.items():
        inside = [o for o in offsets if a * total <= o[0] <= b * total]
        if inside:
            _, si, pi, sent = rng.choice(inside)
            doc.removed_spans.setdefault((si, pi), []).append(sent)
            doc.queries.append({"kind": "needle", "needle": needle, "text": sent, "at": (si, pi)})


def build_collection(sources: Mapping[str, str], out_dir: str, *, count_tokens: Optional[TokenCounter] = None,
                     buckets: Sequence[int] = BUCKETS, docs_per_bucket: int = 64, seed: int = 0,
                     test_fraction: float = 0.5, tolerance: float = 0.15,
                     exclude: Sequence[str] = ("translations",), log=None) -> dict:
    """Builds the collection from ``sources`` (``{name: folder of .rst files}``) into ``out_dir``.

    ``count_tokens`` maps a list of texts to their token counts (default: the GPT-NeoX
    tokenizer). Returns the statistics also written to ``stats.json``. The same sources,
    settings and seed give byte-identical files.
    """
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be within [0, 1], got {test_fraction}")
    if docs_per_bucket <= 0 or not buckets:
        raise ValueError("docs_per_bucket must be positive and buckets non-empty")
    count_tokens = count_tokens or neox_token_counter()
    log = log or (lambda msg: None)
    rng = random.Random(seed)
    loaded = _load_sources(sources, exclude)
    groups = collections.OrderedDict()  # (source, folder) -> sections of its files, in file order
    for name, files in loaded.items():
        for path, sections in files:
            groups.setdefault((name, os.path.dirname(path)), []).extend(sections)
    keys = list(groups)
    rng.shuffle(keys)
    stream_sections = [(key[0], s) for key in keys for s in groups[key]]
    log(f"{sum(len(f) for f in loaded.values())} files, {len(stream_sections)} sections; counting tokens")
    _count_sections([s for _, s in stream_sections], count_tokens)
    title_count = collections.Counter(_norm(s.title) for _, s in stream_sections)
    sentence_count = collections.Counter(_norm(x) for _, s in stream_sections
                                         for p, pr in zip(s.paragraphs, s.prose) if pr for x in _sentences(p))

    stream = _Stream(stream_sections)
    made = {b: 0 for b in buckets}
    docs: List[_Doc] = []
    while not stream.done():
        lacking = [b for b in buckets if made[b] < docs_per_bucket]
        if not lacking:
            break
        b = rng.choices(lacking, weights=[docs_per_bucket - made[x] for x in lacking])[0]
        source, sections = stream.take(b, tolerance)
        if not sections:
            continue
        made[b] += 1
        docs.append(_Doc(f"{source}-{bucket_name(b)}-{made[b]:04d}", b, source, sections))
    log(f"{len(docs)} documents: " + ", ".join(f"{bucket_name(b)} {made[b]}" for b in buckets))

    split = {}
    for b in buckets:
        in_bucket = [d.docno for d in docs if d.bucket == b]
        rng.shuffle(in_bucket)
        n_test = round(len(in_bucket) * test_fraction)
        split.update({docno: "test" if k < n_test else "train" for k, docno in enumerate(in_bucket)})

    for doc in docs:
        _choose_queries(doc, rng, title_count, sentence_count)
    texts = [doc.render() for doc in docs]
    doc_tokens = count_tokens(texts)
    return _write(out_dir, docs, texts, doc_tokens, split, buckets, {
        "sources": {k: os.path.abspath(v) for k, v in sources.items()}, "seed": seed,
        "docs_per_bucket": docs_per_bucket, "test_fraction": test_fraction, "tolerance": tolerance,
        "buckets": list(buckets), "files": {k: len(v) for k, v in loaded.items()},
        "sections": len(stream_sections), "material_tokens": sum(sum(s.tokens) + s.title_tokens
                                                                  for _, s in stream_sections)})


def _write(out_dir, docs, texts, doc_tokens, split, buckets, settings) -> dict:
    os.makedirs(os.path.join(out_dir, "qrels"), exist_ok=True)
    query_rows = []
    for doc, text, tokens in zip(docs, texts, doc_tokens):
        for q in doc.queries:
            qid = f"{doc.docno}-{q['kind']}" + (f"-{q['needle']}" if q["needle"] else "")
            si, pi = q["at"]
            position = 0.0
            if q["kind"] in ("needle", "summary_paragraph"):
                # the gap: right after the (shortened) paragraph's remaining text, else where the paragraph was
                position = _gap_position(doc, text, si, pi, q["text"])
            query_rows.append({"_id": qid, "doc": doc.docno, "kind": q["kind"], "needle": q["needle"],
                               "position": round(position, 4), "bucket": bucket_name(doc.bucket),
                               "split": split[doc.docno], "tokens": tokens, "text": " ".join(q["text"].split())})

    def jsonl(name, rows):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")

    jsonl("corpus.jsonl", ({"_id": d.docno, "title": "", "text": t} for d, t in zip(docs, texts)))
    jsonl("queries.jsonl", ({"_id": q["_id"], "text": q["text"]} for q in query_rows))
    jsonl("docs.jsonl", ({"_id": d.docno, "bucket": bucket_name(d.bucket), "tokens": n, "split": split[d.docno],
                          "source": d.source, "files": sorted({s.path for s in d.sections}),
                          "sections": len(d.sections)} for d, n in zip(docs, doc_tokens)))
    jsonl("queries_meta.jsonl", ({k: v for k, v in q.items() if k != "text"} for q in query_rows))
    with open(os.path.join(out_dir, "corpus.trec"), "w", encoding="utf-8") as f:
        for d, t in zip(docs, texts):
            f.write(f"<DOC>\n<DOCNO>{d.docno}</DOCNO>\n{_trec_safe(t)}\n</DOC>\n")
    for part in ("train", "test"):
        rows = [q for q in query_rows if q["split"] == part]
        with open(os.path.join(out_dir, "qrels", f"{part}.tsv"), "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            f.writelines(f"{q['_id']}\t{q['doc']}\t1\n" for q in rows)
        with open(os.path.join(out_dir, f"qrels.{part}.txt"), "w", encoding="utf-8") as f:
            f.writelines(f"{q['_id']} 0 {q['doc']} 1\n" for q in rows)
        with open(os.path.join(out_dir, f"topics.{part}.trec"), "w", encoding="utf-8") as f:
            f.writelines(f"<top>\n<num>{q['_id']}</num>\n<title>{q['text']}</title>\n</top>\n" for q in rows)

    stats = dict(settings)
    stats["documents"] = {}
    for b in buckets:
        tok = [n for d, n in zip(docs, doc_tokens) if d.bucket == b]
        stats["documents"][bucket_name(b)] = {
            "count": len(tok), "train": sum(split[d.docno] == "train" for d in docs if d.bucket == b),
            "tokens_min": min(tok, default=0), "tokens_median": int(statistics.median(tok)) if tok else 0,
            "tokens_max": max(tok, default=0)}
    table = collections.Counter((q["bucket"], _kind_label(q), q["split"]) for q in query_rows)
    stats["queries"] = {f"{b}|{k}|{s}": n for (b, k, s), n in sorted(table.items())}
    stats["queries_total"] = {s: sum(q["split"] == s for q in query_rows) for s in ("train", "test")}
    with open(os.path.join(out_dir, "stats.json"), "w", encoding="utf-8") as f:
        json.dump(stats, f, indent=1)
    return stats


def _kind_label(q: Mapping) -> str:
    return f"needle_{q['needle']}" if q["kind"] == "needle" else q["kind"]


def _gap_position(doc: _Doc, text: str, si: int, pi: int, held_out: str) -> float:
    """Where a held-out sentence or paragraph was, as a fraction of the final text's length."""
    marked = doc.render(mark=((si, pi), held_out))
    return min(1.0, marked.index("\0") / max(1, len(text)))


_TREC_MARKERS = re.compile(r"^\s*(</?DOC>|<DOCNO>)", re.IGNORECASE | re.MULTILINE)


def _trec_safe(text: str) -> str:
    """A line that would read as a TREC marker (<DOC>, </DOC>, <DOCNO>) gets its '<' as '&lt;'."""
    return _TREC_MARKERS.sub(lambda m: m.group(0).replace("<", "&lt;"), text)


# ---------------------------------------------------------------- reading it back

def read_query_groups(folder: str, split: Optional[str] = None) -> Dict[str, Dict[str, str]]:
    """``{"bucket": {qid: "4k"}, "kind": {qid: kind}, "needle": {qid: "start"|...}}`` from
    ``queries_meta.jsonl`` (``needle`` holds needle queries only), for ``evaluate_by_group``."""
    groups: Dict[str, Dict[str, str]] = {"bucket": {}, "kind": {}, "needle": {}}
    with open(os.path.join(folder, "queries_meta.jsonl"), encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            if split is not None and q["split"] != split:
                continue
            groups["bucket"][q["_id"]] = q["bucket"]
            groups["kind"][q["_id"]] = _kind_label(q)
            if q["kind"] == "needle":
                groups["needle"][q["_id"]] = q["needle"]
    return groups


def stats_markdown(stats: Mapping) -> str:
    """The collection's counts as Markdown tables."""
    buckets = list(stats["documents"])
    kinds = ["section_title", "needle_start", "needle_middle", "needle_end", "summary_title", "summary_paragraph"]
    out = ["| bucket | documents (train / test) | tokens min / median / max | " + " | ".join(kinds) + " |",
           "|---|---|---|" + "---|" * len(kinds)]
    for b in buckets:
        d = stats["documents"][b]
        cells = []
        for k in kinds:
            tr = stats["queries"].get(f"{b}|{k}|train", 0)
            te = stats["queries"].get(f"{b}|{k}|test", 0)
            cells.append(f"{tr} / {te}")
        out.append(f"| {b} | {d['count']} ({d['train']} / {d['count'] - d['train']}) | "
                   f"{d['tokens_min']} / {d['tokens_median']} / {d['tokens_max']} | " + " | ".join(cells) + " |")
    qt = stats["queries_total"]
    out += ["", f"Query counts are train / test. Queries: {qt['train']} train, {qt['test']} test. "
            f"Sources: " + ", ".join(f"{k} ({stats['files'][k]} files)" for k in stats["files"]) +
            f"; {stats['material_tokens']} tokens of material in {stats['sections']} sections; seed {stats['seed']}."]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", required=True, help="folder to write the collection to")
    ap.add_argument("--source", action="append", default=[], metavar="NAME=DIR",
                    help="a folder of .rst files (repeatable; default: Debian's python3.X-doc and linux-doc)")
    ap.add_argument("--docs-per-bucket", type=int, default=64)
    ap.add_argument("--buckets", default=",".join(str(b) for b in BUCKETS), help="token sizes, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-fraction", type=float, default=0.5)
    ap.add_argument("--tolerance", type=float, default=0.15, help="documents are within +-this of their bucket")
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="tokenizer.json used to count tokens")
    args = ap.parse_args(argv)
    sources = dict(s.split("=", 1) for s in args.source) if args.source else default_sources()
    if not sources:
        ap.error("no sources: install python3.11-doc and linux-doc, or pass --source NAME=DIR")
    stats = build_collection(sources, args.out, count_tokens=neox_token_counter(args.tokenizer),
                             buckets=[int(b) for b in args.buckets.split(",")], docs_per_bucket=args.docs_per_bucket,
                             seed=args.seed, test_fraction=args.test_fraction, tolerance=args.tolerance,
                             log=lambda m: print(f"[long_docs] {m}", file=sys.stderr, flush=True))
    print(stats_markdown(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
