"""Readers and writers for the file formats of IR test collections.

TREC: topics (``<top><num><title>``), documents (``<DOC><DOCNO>``, streamed), qrels
(``qid iter docno rel``) and run files (``qid Q0 docno rank score tag``).
BEIR: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

Every reader raises ``ValueError`` naming the file and line of the first malformed line.
Runs and qrels are nested dicts, ``{qid: {docno: score}}`` and ``{qid: {docno: rel}}``, the shape
:func:`mambaret.evaluate` and pytrec_eval take.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
from typing import Dict, Iterator, Mapping, Optional, Tuple

from .._atomic import atomic_open

Run = Dict[str, Dict[str, float]]
Qrels = Dict[str, Dict[str, int]]

__all__ = [
    "load_trec_topics",
    "iter_trec_docs",
    "load_trec_docs",
    "load_qrels",
    "load_trec_run",
    "write_trec_run",
    "ranked",
    "load_beir_corpus",
    "load_beir_queries",
    "load_beir_qrels",
    "load_beir",
    "document_text",
]


def _malformed(path, line_no: int, why: str) -> ValueError:
    return ValueError(f"{os.fspath(path)}, line {line_no}: {why}")


def not_utf8_error(path) -> ValueError:
    """A ValueError naming the file and the line of its first byte that is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line_no = 1
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                # the decoder's held-back bytes (an unfinished character) hold no newline
                line_no += exc.object.count(b"\n", 0, exc.start)
                return _malformed(path, line_no, f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); "
                                                 "is it a binary file?")
            line_no += block.count(b"\n")
    return ValueError(f"{os.fspath(path)}: not UTF-8 text (it ends inside a character); is it a binary file?")


def utf8_lines(path) -> Iterator[Tuple[int, str]]:
    """(line number, line) of a UTF-8 text file; a file that is not UTF-8 is a ValueError
    naming the file and the line."""
    with open(path, "r", encoding="utf-8") as f:
        try:
            yield from enumerate(f, 1)
        except UnicodeDecodeError:
            raise not_utf8_error(path) from None


def _open_text(path):
    # utf-8 with replacement: old collections carry stray Latin-1 bytes in running text
    return open(path, "r", encoding="utf-8", errors="replace", newline=None)


# ---------------------------------------------------------------- TREC topics

_TAG = re.compile(r"<(/?)([A-Za-z]+)>")


def load_trec_topics(path, field: str = "title") -> Dict[str, str]:
    """Reads TREC topics: ``{num: text of <field>}`` in file order.

    Accepts closed tags (``<title>...</title>``) and the classic TREC form where a field runs
    until the next tag (``<title> text``), and ``<num> Number: 401``.
    """
    field = field.lower()
    topics: Dict[str, str] = {}
    current: Optional[Dict[str, list]] = None  # field name -> text pieces of the open topic
    open_field: Optional[str] = None
    top_line = 0
    with _open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            pos = 0
            for m in _TAG.finditer(line):
                if current is not None and open_field is not None:
                    current[open_field].append(line[pos:m.start()])
                pos = m.end()
                closing, name = m.group(1) == "/", m.group(2).lower()
                if name == "top":
                    if not closing:
                        if current is not None:
                            raise _malformed(path, line_no, "<top> inside another <top>")
                        current, open_field, top_line = {}, None, line_no
                        continue
                    if current is None:
                        raise _malformed(path, line_no, "</top> without <top>")
                    _finish_topic(path, line_no, top_line, current, field, topics)
                    current, open_field = None, None
                elif current is None:
                    raise _malformed(path, line_no, f"<{m.group(1)}{name}> outside <top>")
                elif closing:
                    open_field = None
                else:
                    open_field = name
                    current.setdefault(name, [])
            if current is not None and open_field is not None:
                current[open_field].append(line[pos:])
    if current is not None:
        raise _malformed(path, top_line, "<top> is never closed")
    return topics


def _finish_topic(path, line_no, top_line, fields, wanted, topics):
    if "num" not in fields:
        raise _malformed(path, top_line, "topic has no <num>")
    num = " ".join("".join(fields["num"]).split())
    if num.lower().startswith("number:"):
        num = num[len("number:"):].strip()
    if not num or len(num.split()) != 1:
        raise _malformed(path, top_line, f"bad topic number {num!r}")
    if wanted not in fields:
        raise _malformed(path, top_line, f"topic {num} has no <{wanted}>")
    if num in topics:
        raise _malformed(path, line_no, f"topic {num} appears twice")
    topics[num] = " ".join("".join(fields[wanted]).split())


# ---------------------------------------------------------------- TREC documents

def iter_trec_docs(path) -> Iterator[Tuple[str, str]]:
    """Streams ``(docno, text)`` from a TREC ``<DOC>`` file, one document in memory at a time.

    The text is every line of the document other than the ``<DOCNO>`` line, with tags kept.
    """
    docno: Optional[str] = None
    in_doc = False
    doc_line = 0
    body: list = []
    seen = set()
    with _open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            stripped = line.strip()
            upper = stripped.upper()
            if upper == "<DOC>":
                if in_doc:
                    raise _malformed(path, line_no, "<DOC> inside another <DOC>")
                in_doc, docno, body, doc_line = True, None, [], line_no
            elif upper == "</DOC>":
                if not in_doc:
                    raise _malformed(path, line_no, "</DOC> without <DOC>")
                if docno is None:
                    raise _malformed(path, doc_line, "document has no <DOCNO>")
                if docno in seen:
                    raise _malformed(path, doc_line, f"DOCNO {docno} appears twice")
                seen.add(docno)
                yield docno, "".join(body).strip()
                in_doc = False
            elif upper.startswith("<DOCNO>"):
                if not in_doc:
                    raise _malformed(path, line_no, "<DOCNO> outside <DOC>")
                if docno is not None:
                    raise _malformed(path, line_no, "second <DOCNO> in one document")
                if not upper.endswith("</DOCNO>"):
                    raise _malformed(path, line_no, "<DOCNO> not closed on its line")
                docno = stripped[len("<DOCNO>"):-len("</DOCNO>")].strip()
                if not docno or len(docno.split()) != 1:
                    raise _malformed(path, line_no, f"bad DOCNO {docno!r}")
            elif in_doc:
                body.append(line)
            elif stripped:
                raise _malformed(path, line_no, "text outside <DOC>")
    if in_doc:
        raise _malformed(path, doc_line, "<DOC> is never closed")


def load_trec_docs(path) -> Dict[str, str]:
    """All documents of a TREC ``<DOC>`` file as ``{docno: text}``."""
    return dict(iter_trec_docs(path))


# ---------------------------------------------------------------- qrels and runs

def load_qrels(path) -> Qrels:
    """Reads TREC qrels, ``qid iter docno rel`` per line (``iter`` is ignored)."""
    qrels: Qrels = {}
    with _open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise _malformed(path, line_no, f"expected 4 fields 'qid iter docno rel', got {len(parts)}")
            qid, _, docno, rel = parts
            _add_judgement(qrels, path, line_no, qid, docno, rel)
    return qrels


def _add_judgement(qrels: Qrels, path, line_no: int, qid: str, docid: str, rel: str) -> None:
    try:
        value = int(rel)
    except ValueError:
        raise _malformed(path, line_no, f"relevance {rel!r} is not an integer") from None
    judged = qrels.setdefault(qid, {})
    if docid in judged:
        raise _malformed(path, line_no, f"document {docid} judged twice for query {qid}")
    judged[docid] = value


def load_trec_run(path) -> Run:
    """Reads a TREC run file, ``qid Q0 docno rank score tag`` per line, as ``{qid: {docno: score}}``.

    The rank column is checked to be an integer but not used: like trec_eval, the order comes
    from the scores.
    """
    run: Run = {}
    with _open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise _malformed(path, line_no, f"expected 6 fields 'qid Q0 docno rank score tag', got {len(parts)}")
            qid, _, docno, rank, score, _ = parts
            try:
                int(rank)
                value = float(score)
            except ValueError:
                raise _malformed(path, line_no, f"bad rank {rank!r} or score {score!r}") from None
            if math.isnan(value):
                raise _malformed(path, line_no, "score is NaN")
            docs = run.setdefault(qid, {})
            if docno in docs:
                raise _malformed(path, line_no, f"document {docno} retrieved twice for query {qid}")
            docs[docno] = value
    return run


def ranked(docs: Mapping[str, float]):
    """``(docno, score)`` pairs in trec_eval's order: score descending, then docno descending."""
    return sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)


def write_trec_run(run: Mapping[str, Mapping[str, float]], path, tag: str = "mambaret",
                   k: Optional[int] = None) -> None:
    """Writes ``run`` as a TREC run file, each query's documents in trec_eval's order, ranks from 1.

    ``k`` keeps only the first k documents per query. Scores are written exactly (shortest
    round-trip form) so that reading the file back gives the same ranking.
    """
    if k is not None and k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if not tag or len(tag.split()) != 1:
        raise ValueError(f"run tag must be one word, got {tag!r}")
    with atomic_open(path, "w", encoding="utf-8") as f:  # a failed write leaves no partial run file
        for qid, docs in run.items():
            _check_token("query id", qid)
            for rank, (docno, score) in enumerate(ranked(docs)[:k], 1):
                _check_token("document id", docno)
                f.write(f"{qid} Q0 {docno} {rank} {float(score)!r} {tag}\n")


def _check_token(what: str, value) -> None:
    if not isinstance(value, str) or not value or len(value.split()) != 1:
        raise ValueError(f"{what} {value!r} cannot be written in a TREC file (empty or has spaces)")


# ---------------------------------------------------------------- BEIR

def _iter_jsonl(path) -> Iterator[Tuple[int, dict]]:
    for line_no, line in utf8_lines(path):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise _malformed(path, line_no, f"invalid JSON ({e.msg})") from None
        except RecursionError:
            raise _malformed(path, line_no, "invalid JSON (nested too deeply)") from None
        if not isinstance(item, dict) or "_id" not in item:
            raise _malformed(path, line_no, "expected a JSON object with an '_id'")
        yield line_no, item


def document_text(doc) -> str:
    """The text of a document: a str as is, a BEIR {"title", "text"} dict as its non-empty
    title and text joined by a space (the title is searchable text too)."""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, Mapping):
        return " ".join(part for part in (doc.get("title", ""), doc.get("text", "")) if part)
    raise ValueError(f"a document must be a str or a dict with 'title'/'text', got {type(doc).__name__}")


def load_beir_corpus(path) -> Dict[str, Dict[str, str]]:
    """``corpus.jsonl`` as ``{doc_id: {"title": ..., "text": ...}}`` (BEIR's in-memory shape)."""
    corpus: Dict[str, Dict[str, str]] = {}
    for line_no, item in _iter_jsonl(path):
        doc_id = str(item["_id"])
        if doc_id in corpus:
            raise _malformed(path, line_no, f"document {doc_id} appears twice")
        text, title = item.get("text", ""), item.get("title", "")
        if not isinstance(text, str) or not isinstance(title, str):
            raise _malformed(path, line_no, "'text' and 'title' must be strings")
        corpus[doc_id] = {"title": title, "text": text}
    return corpus


def load_beir_queries(path) -> Dict[str, str]:
    """``queries.jsonl`` as ``{query_id: text}``."""
    queries: Dict[str, str] = {}
    for line_no, item in _iter_jsonl(path):
        qid = str(item["_id"])
        if qid in queries:
            raise _malformed(path, line_no, f"query {qid} appears twice")
        text = item.get("text")
        if not isinstance(text, str):
            raise _malformed(path, line_no, "query has no 'text' string")
        queries[qid] = text
    return queries


def load_beir_qrels(path) -> Qrels:
    """``qrels/<split>.tsv`` (``query-id<TAB>corpus-id<TAB>score``, one header line)."""
    qrels: Qrels = {}
    for line_no, line in utf8_lines(path):
        if not line.strip():
            continue
        parts = line.rstrip("\r\n").split("\t")
        if line_no == 1 and parts and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue
        if len(parts) != 3:
            raise _malformed(path, line_no, f"expected 3 tab-separated fields, got {len(parts)}")
        qid, doc_id, score = (p.strip() for p in parts)
        _add_judgement(qrels, path, line_no, qid, doc_id, score)
    return qrels


def load_beir(folder, split: str = "test"):
    """A BEIR dataset folder as ``(corpus, queries, qrels)``, like ``GenericDataLoader.load``.

    Queries are limited to those judged in the split, as BEIR does.
    """
    folder = os.fspath(folder)
    names = {
        "corpus": os.path.join(folder, "corpus.jsonl"),
        "queries": os.path.join(folder, "queries.jsonl"),
        "qrels": os.path.join(folder, "qrels", f"{split}.tsv"),
    }
    for what, p in names.items():
        if not os.path.isfile(p):
            raise FileNotFoundError(f"BEIR {what} file not found: {p}")
    corpus = load_beir_corpus(names["corpus"])
    queries = load_beir_queries(names["queries"])
    qrels = load_beir_qrels(names["qrels"])
    return corpus, {qid: text for qid, text in queries.items() if qid in qrels}, qrels
