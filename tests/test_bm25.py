"""The BM25 baseline: ranking sanity, run shape, bad input, and the missing-package error."""
import sys

import pytest

from mambaret.evaluation.bm25 import BM25, bm25_run

CORPUS = {
    "cats": "cats purr and cats sleep all day",
    "dogs": "dogs bark at the mail carrier",
    "birds": {"title": "Birds", "text": "birds sing in the morning"},
    "mixed": "a cat and a dog share a house",
}


def test_ranks_the_matching_document_first():
    pytest.importorskip("bm25s")
    run = bm25_run(CORPUS, {"q1": "why do cats purr", "q2": "birds", "q3": "zebra"}, k=10)
    assert next(iter(sorted(run["q1"].items(), key=lambda kv: -kv[1])))[0] == "cats"
    assert list(run["q2"]) == ["birds"]  # the title is indexed; documents without a match are left out
    assert run["q3"] == {}
    assert all(isinstance(s, float) and s > 0 for s in run["q1"].values())


def test_k_limits_the_run_and_must_be_positive():
    pytest.importorskip("bm25s")
    index = BM25(CORPUS)
    run = index.search({"q": "cats dogs birds cat dog"}, k=2)
    assert len(run["q"]) == 2
    assert index.search({}, k=3) == {}
    with pytest.raises(ValueError, match="k must be"):
        index.search({"q": "cats"}, k=0)


def test_bad_corpus():
    pytest.importorskip("bm25s")
    with pytest.raises(ValueError, match="empty"):
        BM25({})
    with pytest.raises(ValueError, match="str or a dict"):
        BM25({"d": 5})


def test_missing_package_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "bm25s", None)  # makes `import bm25s` fail
    with pytest.raises(ImportError, match=r"pip install bm25s \(or pip install \"\.\[bm25\]\""):
        BM25(CORPUS)
