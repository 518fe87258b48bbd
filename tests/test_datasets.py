"""TREC and BEIR readers/writers: good files, the Vaswani collection, and malformed lines."""
import json

import pytest
from conftest import shared_file

from mambaret.evaluation import datasets


def vaswani(name):
    return shared_file("vaswani", name)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_vaswani_collection():
    topics = datasets.load_trec_topics(vaswani("query-text.trec"))
    assert len(topics) == 93
    assert topics["1"] == "MEASUREMENT OF DIELECTRIC CONSTANT OF LIQUIDS BY THE USE OF MICROWAVE TECHNIQUES"
    docs = datasets.load_trec_docs(vaswani("doc-text.trec"))
    assert len(docs) == 11429
    assert docs["4"] == "the british computer society  report of a conference held in cambridge\njune"
    qrels = datasets.load_qrels(vaswani("qrels"))
    assert len(qrels) == 93 and sum(len(v) for v in qrels.values()) == 2083
    assert qrels["1"]["1239"] == 1


def test_classic_trec_topics(tmp_path):
    path = write(tmp_path, "topics", "<top>\n<num> Number: 301\n<title> International Organized Crime\n\n"
                                     "<desc> Description:\nIdentify organizations\n</top>\n")
    assert datasets.load_trec_topics(path) == {"301": "International Organized Crime"}
    assert datasets.load_trec_topics(path, field="desc") == {"301": "Description: Identify organizations"}


@pytest.mark.parametrize("text, line, message", [
    ("<top>\n<title>x</title>\n</top>\n", 1, "no <num>"),
    ("<top>\n<num>1</num>\n</top>\n", 1, "no <title>"),
    ("<top>\n<num>1</num><title>a</title>\n", 1, "never closed"),
    ("<num>1</num>\n", 1, "outside <top>"),
    ("<top><num>1</num><title>a</title></top>\n<top><num>1</num><title>b</title></top>\n", 2, "twice"),
])
def test_malformed_topics(tmp_path, text, line, message):
    path = write(tmp_path, "topics.trec", text)
    with pytest.raises(ValueError, match=rf"topics\.trec, line {line}: .*{message}"):
        datasets.load_trec_topics(path)


def test_trec_docs_stream(tmp_path):
    path = write(tmp_path, "docs.trec", "<DOC>\n<DOCNO> A1 </DOCNO>\nfirst text\n</DOC>\n\n<DOC>\n<DOCNO>B</DOCNO>\n</DOC>\n")
    stream = datasets.iter_trec_docs(path)
    assert next(stream) == ("A1", "first text")
    assert list(stream) == [("B", "")]


@pytest.mark.parametrize("text, line, message", [
    ("<DOC>\ntext\n</DOC>\n", 1, "no <DOCNO>"),
    ("<DOC>\n<DOCNO>1</DOCNO>\n<DOC>\n", 3, "inside another"),
    ("<DOC>\n<DOCNO>1</DOCNO>\ntext\n", 1, "never closed"),
    ("stray\n", 1, "outside <DOC>"),
    ("<DOC>\n<DOCNO>1</DOCNO>\n</DOC>\n<DOC>\n<DOCNO>1</DOCNO>\n</DOC>\n", 4, "twice"),
    ("<DOC>\n<DOCNO>1\n</DOC>\n", 2, "not closed"),
])
def test_malformed_docs(tmp_path, text, line, message):
    path = write(tmp_path, "docs.trec", text)
    with pytest.raises(ValueError, match=rf"docs\.trec, line {line}: .*{message}"):
        list(datasets.iter_trec_docs(path))


def test_qrels(tmp_path):
    path = write(tmp_path, "qrels", "1 0 d1 1\n\n1 0 d2 0\n2 Q0 d1 2\n")
    assert datasets.load_qrels(path) == {"1": {"d1": 1, "d2": 0}, "2": {"d1": 2}}


@pytest.mark.parametrize("bad, message", [
    ("1 0 d3\n", "expected 4 fields"),
    ("1 0 d3 yes\n", "not an integer"),
    ("1 0 d1 0\n", "judged twice"),
])
def test_malformed_qrels_line_names_file_and_line(tmp_path, bad, message):
    path = write(tmp_path, "my.qrels", "1 0 d1 1\n1 0 d2 0\n" + bad)
    with pytest.raises(ValueError, match=rf"my\.qrels, line 3: .*{message}"):
        datasets.load_qrels(path)


def test_run_round_trip_keeps_exact_order(tmp_path):
    run = {"q1": {"a": 0.5, "b": 0.5, "c": 1 / 3, "d": 0.1 + 0.2}, "q2": {}}
    path = tmp_path / "run.txt"
    datasets.write_trec_run(run, path, tag="test")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 b 1 0.5 test" and lines[1] == "q1 Q0 a 2 0.5 test"
    assert datasets.load_trec_run(path) == {"q1": run["q1"]}
    datasets.write_trec_run(run, path, k=2)
    assert set(datasets.load_trec_run(path)["q1"]) == {"a", "b"}


def test_run_writer_rejects_unwritable_ids(tmp_path):
    with pytest.raises(ValueError, match="spaces"):
        datasets.write_trec_run({"q 1": {"a": 1.0}}, tmp_path / "r")
    with pytest.raises(ValueError, match="k must be positive"):
        datasets.write_trec_run({"q": {"a": 1.0}}, tmp_path / "r", k=0)


@pytest.mark.parametrize("bad, message", [
    ("q1 Q0 d1 1 0.5\n", "expected 6 fields"),
    ("q1 Q0 d1 x 0.5 t\n", "bad rank"),
    ("q1 Q0 d1 1 nan t\n", "NaN"),
    ("q1 Q0 d0 1 0.5 t\n", "retrieved twice"),
])
def test_malformed_run_line(tmp_path, bad, message):
    path = write(tmp_path, "run.txt", "q1 Q0 d0 1 0.9 t\n" + bad)
    with pytest.raises(ValueError, match=rf"run\.txt, line 2: .*{message}"):
        datasets.load_trec_run(path)


def beir_folder(tmp_path, corpus_lines, query_lines, qrels_text):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("\n".join(corpus_lines) + "\n", encoding="utf-8")
    (folder / "queries.jsonl").write_text("\n".join(query_lines) + "\n", encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text(qrels_text, encoding="utf-8")
    return folder


def test_beir_folder(tmp_path):
    corpus = [json.dumps({"_id": "d1", "title": "T", "text": "one"}), json.dumps({"_id": 2, "text": "two"})]
    queries = [json.dumps({"_id": "q1", "text": "find one"}), json.dumps({"_id": "q2", "text": "unjudged"})]
    folder = beir_folder(tmp_path, corpus, queries, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\t2\t0\n")
    loaded_corpus, loaded_queries, qrels = datasets.load_beir(folder)
    assert loaded_corpus == {"d1": {"title": "T", "text": "one"}, "2": {"title": "", "text": "two"}}
    assert loaded_queries == {"q1": "find one"}
    assert qrels == {"q1": {"d1": 1, "2": 0}}
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        datasets.load_beir(folder, split="dev")


def test_malformed_beir_files(tmp_path):
    folder = beir_folder(tmp_path, ['{"_id": "d1", "text": "x"}', '{"_id": "d2", "text": '],
                         ['{"text": "no id"}'], "query-id\tcorpus-id\tscore\nq1\td1\n")
    with pytest.raises(ValueError, match=r"corpus\.jsonl, line 2: invalid JSON"):
        datasets.load_beir_corpus(folder / "corpus.jsonl")
    with pytest.raises(ValueError, match=r"queries\.jsonl, line 1: .*'_id'"):
        datasets.load_beir_queries(folder / "queries.jsonl")
    with pytest.raises(ValueError, match=r"test\.tsv, line 2: expected 3"):
        datasets.load_beir_qrels(folder / "qrels" / "test.tsv")
