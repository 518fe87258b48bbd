"""The long-document collection builder (scripts/build_long_docs.py) on a synthetic .rst tree,
per-group evaluation, and the long-document benchmark's report."""
import filecmp
import gzip
import json
import os
import random
import sys

import pytest

import mambaret as mr
from mambaret.evaluation import datasets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import build_long_docs as bld  # noqa: E402

BUCKETS = (128, 256, 512)


def words_count(texts):
    return [len(t.split()) for t in texts]


def _word(n: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = ""
    n += 26 * 27  # at least three letters
    while n:
        n, r = divmod(n, 26)
        out = letters[r] + out
    return out


def write_tree(root, files=40, seed=5):
    """Manual-like pages: overlined titles, sections, prose, literal blocks, directives, roles.
    Every sentence and title is unique (a serial word), so each may become a query."""
    rng = random.Random(seed)
    vocab = ["kernel", "module", "buffer", "thread", "socket", "driver", "memory", "device", "queue", "lock",
             "state", "scan", "token", "model", "index", "table", "shape", "batch", "length", "cache"]
    serial = iter(range(10 ** 6))

    def sentence():
        n = rng.randint(9, 13)
        ws = [rng.choice(vocab) for _ in range(n - 1)] + [_word(next(serial))]
        rng.shuffle(ws)
        return " ".join(ws).capitalize() + "."

    def paragraph(k=None):  # at most 26 words: under the 15 % window of the smallest bucket
        k = k or rng.randint(1, 2)
        text = " ".join(sentence() for _ in range(k))
        out, line = [], ""
        for w in text.split():  # wrapped at 70 columns, as in the manuals
            if len(line) + len(w) > 70:
                out.append(line)
                line = w
            else:
                line = (line + " " + w).strip()
        return "\n".join(out + [line]).replace(". ", ".  ")  # two spaces after a full stop, as in the manuals

    def title():
        return f"{rng.choice(vocab).capitalize()} {_word(next(serial))} {rng.choice(vocab)}"

    for f in range(files):
        folder = os.path.join(root, f"part{f % 3}")
        os.makedirs(folder, exist_ok=True)
        t = title()
        lines = [".. _label-%d:" % f, "", "=" * len(t), t, "=" * len(t), "", ".. index:: single: hidden", "",
                 paragraph(), "", f"See :func:`~os.{_word(next(serial))}` and ``literal`` too.", ""]
        for s in range(rng.randint(2, 4)):
            st = title()
            lines += [st, "-" * len(st), ""]
            for _ in range(rng.randint(2, 4)):
                lines += [paragraph(), ""]
            lines += ["Example::", "", "    x = compute(1)", "    print(x)", "", ".. note::", "",
                      "   " + paragraph(1).replace("\n", "\n   "), ""]
        text = "\n".join(lines) + "\n"
        if f % 4 == 0:
            with gzip.open(os.path.join(folder, f"page{f}.rst.gz"), "wt", encoding="utf-8") as fh:
                fh.write(text)
        else:
            with open(os.path.join(folder, f"page{f}.rst" + (".txt" if f % 2 else "")), "w", encoding="utf-8") as fh:
                fh.write(text)
    with open(os.path.join(root, "ignored.txt"), "w") as fh:
        fh.write("not rst\n")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("rst")
    write_tree(str(root))
    return str(root)


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("coll"))
    stats = bld.build_collection({"syn": tree}, out, count_tokens=words_count, buckets=BUCKETS, docs_per_bucket=4,
                                 seed=3, test_fraction=0.5)
    return out, stats


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_parse_rst_sections_prose_and_markup():
    text = ("=====\nTitle\n=====\n\n.. index:: hidden words\n\nIntro with :func:`os.open` and ``x``.\n\n"
            "Part one\n--------\n\nSome words here::\n\n    code_line()\n\n    more_code()\n\n"
            ".. note::\n\n   Noted text here.\n\n.. function:: spam(eggs)\n\n   Does spam.\n\n"
            "   .. versionadded:: 3.1\n\n      New text.\n\n   .. index:: nested hidden\n\n"
            "  Quoted text.\n")
    sections = bld.parse_rst(text)
    assert [s.title for s in sections] == ["Title", "Part one"]
    assert sections[0].paragraphs == ["Intro with os.open and x."] and sections[0].prose == [True]
    part = sections[1]
    assert part.paragraphs[0] == "Some words here:" and not part.prose[0]
    assert part.paragraphs[1].strip() == "code_line()" and not part.prose[1]
    assert part.paragraphs[2].strip() == "more_code()" and not part.prose[2]  # still inside the literal block
    assert "Noted text here." in part.paragraphs and "spam(eggs)" in part.paragraphs and "Does spam." in part.paragraphs
    assert part.paragraphs[-2:] == ["New text.", "Quoted text."] and part.prose[-2:] == [True, True]
    assert not any("hidden" in p or ".." in p for s in sections for p in s.paragraphs)


def test_deterministic_and_seeded(tree, built, tmp_path):
    out, _ = built
    again = str(tmp_path / "again")
    bld.build_collection({"syn": tree}, again, count_tokens=words_count, buckets=BUCKETS, docs_per_bucket=4, seed=3,
                         test_fraction=0.5)
    names = sorted(os.listdir(out))
    assert names == sorted(os.listdir(again))
    for name in names + ["qrels/train.tsv", "qrels/test.tsv"]:
        if os.path.isfile(os.path.join(out, name)) and name != "stats.json":
            assert filecmp.cmp(os.path.join(out, name), os.path.join(again, name), shallow=False), name
    other = str(tmp_path / "other")
    bld.build_collection({"syn": tree}, other, count_tokens=words_count, buckets=BUCKETS, docs_per_bucket=4, seed=4,
                         test_fraction=0.5)
    assert not filecmp.cmp(os.path.join(out, "corpus.jsonl"), os.path.join(other, "corpus.jsonl"), shallow=False)


def test_buckets_and_disjoint_text(built):
    out, stats = built
    docs = _jsonl(os.path.join(out, "docs.jsonl"))
    corpus = datasets.load_beir_corpus(os.path.join(out, "corpus.jsonl"))
    queries = {q["_id"]: q for q in _jsonl(os.path.join(out, "queries.jsonl"))}
    meta = _jsonl(os.path.join(out, "queries_meta.jsonl"))
    assert {d["bucket"] for d in docs} == {bld.bucket_name(b) for b in BUCKETS}
    for b in BUCKETS:
        assert sum(d["bucket"] == bld.bucket_name(b) for d in docs) == 4
    for d in docs:
        b = BUCKETS[[bld.bucket_name(x) for x in BUCKETS].index(d["bucket"])]
        held_out = sum(len(queries[q["_id"]]["text"].split()) for q in meta if q["doc"] == d["_id"])
        assert d["tokens"] == len(corpus[d["_id"]]["text"].split())
        # built from whole sections to within 15 % (paragraph breaks count one token each)
        assert 0.7 * b <= d["tokens"] + held_out <= 1.15 * b, d
    seen = {}
    for docno, doc in corpus.items():
        for par in doc["text"].split("\n\n"):
            if len(par.split()) >= 8:
                assert seen.setdefault(par, docno) == docno, "a paragraph is in two documents"
    assert [stats["documents"][name]["count"] for name in ("128", "256", "512")] == [4, 4, 4]


def test_queries_kinds_removed_and_positions(built):
    out, _ = built
    corpus = datasets.load_beir_corpus(os.path.join(out, "corpus.jsonl"))
    queries = datasets.load_beir_queries(os.path.join(out, "queries.jsonl"))
    meta = _jsonl(os.path.join(out, "queries_meta.jsonl"))
    kinds = {bld._kind_label(q) for q in meta}
    assert kinds == {"section_title", "needle_start", "needle_middle", "needle_end", "summary_title",
                     "summary_paragraph"}
    for q in meta:
        text, doc = queries[q["_id"]], corpus[q["doc"]]["text"]
        if q["kind"] in ("section_title", "summary_title"):
            assert text not in doc.split("\n\n"), "the heading stays in the document"
        else:
            assert text not in doc, "held-out text stays in the document"
        if q["kind"] == "needle":
            lo, hi = bld.NEEDLE_WINDOWS[q["needle"]]
            assert lo - 0.1 <= q["position"] <= hi + 0.1, q  # the other needles' gaps shift it
        assert "<" not in text and ">" not in text
    assert all(q["needle"] == "" for q in meta if q["kind"] != "needle")


def test_splits_and_formats_agree(built):
    out, _ = built
    docs = {d["_id"]: d for d in _jsonl(os.path.join(out, "docs.jsonl"))}
    meta = {q["_id"]: q for q in _jsonl(os.path.join(out, "queries_meta.jsonl"))}
    trec_docs = datasets.load_trec_docs(os.path.join(out, "corpus.trec"))
    seen_queries = set()
    for split in ("train", "test"):
        corpus, queries, qrels = datasets.load_beir(out, split)
        assert trec_docs == {k: v["text"] for k, v in corpus.items()}
        assert datasets.load_qrels(os.path.join(out, f"qrels.{split}.txt")) == qrels
        assert datasets.load_trec_topics(os.path.join(out, f"topics.{split}.trec")) == queries
        assert set(queries) == set(qrels) and queries
        for qid, judged in qrels.items():
            assert judged == {meta[qid]["doc"]: 1}
            assert meta[qid]["split"] == split == docs[meta[qid]["doc"]]["split"]
            assert meta[qid]["bucket"] == docs[meta[qid]["doc"]]["bucket"]
        assert not seen_queries & set(qrels)
        seen_queries |= set(qrels)
    assert seen_queries == set(meta)
    for b in BUCKETS:  # half of each bucket's documents in test
        assert sum(d["split"] == "test" for d in docs.values() if d["bucket"] == bld.bucket_name(b)) == 2


def test_bm25_by_group_on_the_collection(built):
    pytest.importorskip("bm25s")
    from mambaret.evaluation.bm25 import bm25_run

    out, _ = built
    corpus, queries, qrels = datasets.load_beir(out, "test")
    run = bm25_run(corpus, queries, k=10)
    groups = bld.read_query_groups(out, "test")
    by_bucket = mr.evaluate_by_group(run, qrels, groups["bucket"])
    assert sum(v["queries"] for v in by_bucket.values()) == len(qrels)
    overall = mr.evaluate(run, qrels, ["ndcg@10", "mrr@10"])
    mean = sum(v["ndcg@10"] * v["queries"] for v in by_bucket.values()) / len(qrels)
    assert mean == pytest.approx(overall["ndcg@10"])
    assert set(mr.evaluate_by_group(run, qrels, groups["needle"])) == {"start", "middle", "end"}


def test_evaluate_by_group():
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}, "c": {"d3": 1}, "e": {"d1": 1}}
    run = {"a": {"d1": 2.0, "d2": 1.0}, "b": {"d1": 2.0, "d2": 1.0}, "c": {"d9": 1.0}}  # "e" missing: scores 0
    groups = {"a": "long", "b": "long", "c": "short", "e": "short", "x": "short"}  # "x" is not judged
    out = mr.evaluate_by_group(run, qrels, groups, ["mrr@10", "ndcg@1"])
    assert list(out) == ["long", "short"]
    assert out["long"] == {"mrr@10": 0.75, "ndcg@1": 0.5, "queries": 2}
    assert out["short"] == {"mrr@10": 0.0, "ndcg@1": 0.0, "queries": 2}
    with pytest.raises(ValueError, match="nothing to evaluate"):
        mr.evaluate_by_group(run, qrels, {"zz": "g"})
    with pytest.raises(ValueError, match="groups must be a dict"):
        mr.evaluate_by_group(run, qrels, ["a"])


def test_bad_settings_and_empty_source(tmp_path):
    with pytest.raises(ValueError, match="test_fraction"):
        bld.build_collection({"x": str(tmp_path)}, str(tmp_path / "o"), count_tokens=words_count, test_fraction=2)
    with pytest.raises(ValueError, match="no .rst"):
        bld.build_collection({"x": str(tmp_path)}, str(tmp_path / "o"), count_tokens=words_count)


def test_benchmark_report_and_charts(tmp_path, built):
    pytest.importorskip("matplotlib")
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import long_docs

    out, stats = built
    rows = []
    for name, per_token, quad in (("mambaret-130m", 1e-3, 0.0), ("bert-base", 5e-4, 1e-8), ("minilm-chunked", 2e-4, 0)):
        for L in (512, 2048, 8192):
            rows.append({"name": name, "length": L, "threads": 2, "seconds_per_doc": per_token * L + quad * L * L,
                         "peak_rss_mib": 500.0 + (L / 10 if name == "bert-base" else 0)})
    rows.append({"name": "bert-base", "length": 32768, "threads": 2, "skipped": "predicted 999 s/doc > 300 s budget"})
    meta = {"command": "python bench/long_docs.py speed", "date": "d", "machine": {"nproc": 2}, "uptime_before": "u"}
    data = {"collection": {"path": out, "stats": stats}, "speed": {"meta": meta, "rows": rows}}
    args = long_docs.main.__globals__["argparse"].Namespace(results=str(tmp_path))
    text = long_docs.report(args, data)
    assert os.path.getsize(tmp_path / "long_docs_speed.png") > 1000
    assert os.path.getsize(tmp_path / "long_docs_rss.png") > 1000
    assert "| 32768 | " in text and "predicted 999 s/doc" in text
    assert "mambaret-130m: time per token at 8192 = 1.00 x that at 512" in text
    assert "Chunked MiniLM is faster than mambaret-130m at every measured length." in text
    assert "bert-base / mambaret-130m seconds per document: 512: 0.51x" in text
    assert (tmp_path / "long_docs.md").read_text() == text


def _word_tokenizer_file(folder, texts) -> str:
    """A whitespace word-level tokenizer.json (one token a word), so windows count words."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    vocab = {"[UNK]": 0}
    for t in texts:
        for w in t.split():
            vocab.setdefault(w, len(vocab))
    tok = tokenizers.Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = WhitespaceSplit()
    path = os.path.join(folder, "tokenizer.json")
    tok.save(path)
    return path


def test_training_windows_hold_the_evidence(tmp_path, built):
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import long_docs

    out, _ = built
    corpus, queries, _ = datasets.load_beir(out, "train")
    texts = {d: datasets.document_text(corpus[d]) for d in corpus}
    tok_file = _word_tokenizer_file(str(tmp_path), texts.values())
    window = 150  # between the buckets: the 128-word documents fit whole, the others are cut
    pairs, counts = long_docs.training_windows(out, tok_file, window)
    metas = {m["_id"]: m for m in _jsonl(os.path.join(out, "queries_meta.jsonl")) if m["split"] == "train"}
    assert sum(c["kept"] + c["left out"] for c in counts.values()) == len(metas)
    assert len(pairs) == sum(c["kept"] for c in counts.values()) > 0
    by_query = {queries[q]: m for q, m in metas.items()}
    cut = 0
    for p in pairs:
        m = by_query[p["query"]]
        doc = texts[m["doc"]]
        assert p["doc"] == m["doc"] and p["positive"] in doc
        assert len(p["positive"].split()) <= window
        if len(doc.split()) <= window:
            assert p["positive"] == doc
            continue
        cut += 1
        assert m["kind"] != "section_title"  # no recorded position: left out of longer documents
        start = doc.index(p["positive"])
        gap = int(m["position"] * len(doc))
        assert start <= gap <= start + len(p["positive"]) + 1, (m["kind"], m["needle"])
    assert cut > 0
    longer = [m for m in metas.values() if m["kind"] == "section_title" and len(texts[m["doc"]].split()) > window]
    assert counts.get("section_title", {}).get("left out", 0) == len(longer) > 0


def test_speed_runs_add_to_the_table(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import long_docs

    meta = {"command": "python bench/long_docs.py speed", "date": "d", "machine": {"nproc": 2}, "uptime_before": "u"}
    rows = [{"name": n, "length": L, "threads": 2, "seconds_per_doc": 0.001 * L, "peak_rss_mib": 500.0}
            for n in ("mambaret-130m", "bert-base") for L in (512, 1024)]
    rows.append({"name": "bert-base", "length": 2048, "threads": 2, "skipped": "predicted 9 s/doc > 1 s budget"})
    data = {"speed": {"meta": meta, "rows": rows}}  # the layout of a single earlier run
    monkeypatch.setattr(long_docs, "run_worker", lambda spec, timeout: {"seconds_per_doc": 7.0, "peak_rss_mib": 900.0})
    args = long_docs.main.__globals__["argparse"].Namespace(
        results=str(tmp_path), engines=["bert-base"], model=[], lengths=[2048], threads=2, min_seconds=1.0,
        max_tokens=8192, budget_s=600.0, load_s=10.0)
    long_docs.speed(args, data)
    got = {(r["name"], r["length"]): r for r in data["speed"]["rows"]}
    assert len(got) == 5 and got[("bert-base", 2048)]["seconds_per_doc"] == 7.0
    assert got[("bert-base", 2048)]["run"] == 1 and got[("mambaret-130m", 512)]["run"] == 0
    assert [r["name"] for r in data["speed"]["rows"]][:2] == ["mambaret-130m", "mambaret-130m"]
    assert len(data["speed"]["runs"]) == 2
    text = long_docs.report(args, data)
    assert "Run 1 (4 points)" in text and "Run 2 (1 point)" in text and "| 2048 | " in text
    # hand-written findings below the marker survive the next report
    path = tmp_path / "long_docs.md"
    path.write_text(text + "\n" + long_docs.NOTES_MARKER + "\nA finding.\n")
    again = long_docs.report(args, data)
    assert again.endswith(long_docs.NOTES_MARKER + "\nA finding.\n") and path.read_text() == again
