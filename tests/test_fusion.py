"""mambaret.fuse against hand-computed reciprocal-rank and z-score fusions."""
from __future__ import annotations

import math

import pytest

import mambaret as mr

DENSE = {"q1": {"a": 0.9, "b": 0.8, "c": 0.1}, "q2": {"x": 0.5}}
SPARSE = {"q1": {"c": 12.0, "a": 7.0, "d": 3.0}}


def test_rrf_by_hand():
    fused = mr.fuse([DENSE, SPARSE], method="rrf", k=60)
    # q1: a ranks 1 and 2, b 2 and absent, c 3 and 1, d absent and 3
    assert fused["q1"] == pytest.approx({"a": 1 / 61 + 1 / 62, "b": 1 / 62, "c": 1 / 63 + 1 / 61, "d": 1 / 63})
    assert fused["q2"] == pytest.approx({"x": 1 / 61})  # a query one run lacks keeps the other's ranking
    assert [d for d, _ in sorted(fused["q1"].items(), key=lambda i: -i[1])] == ["a", "c", "b", "d"]


def test_rrf_weights_k_and_top_k():
    fused = mr.fuse([DENSE, SPARSE], weights=[1.0, 3.0], k=1, top_k=2)
    # q1: a 1/2 + 3/3 = 1.5, c 1/4 + 3/2 = 1.75, d 3/4, b 1/3: the best two are c then a
    assert fused["q1"] == pytest.approx({"c": 1.75, "a": 1.5})
    assert fused["q2"] == pytest.approx({"x": 0.5})


def test_rrf_ranks_ties_as_trec_eval():
    # equal scores: the larger docid ranks first (trec_eval's order), so "b" gets rank 1
    fused = mr.fuse([{"q": {"a": 1.0, "b": 1.0}}], k=10)
    assert fused["q"] == pytest.approx({"b": 1 / 11, "a": 1 / 12})


def test_zscore_by_hand():
    fused = mr.fuse([DENSE, SPARSE], method="zscore")
    mean1, std1 = 0.6, math.sqrt(((0.3) ** 2 + (0.2) ** 2 + (0.5) ** 2) / 3)
    z1 = {d: (s - mean1) / std1 for d, s in DENSE["q1"].items()}
    mean2 = (12 + 7 + 3) / 3
    std2 = math.sqrt(((12 - mean2) ** 2 + (7 - mean2) ** 2 + (3 - mean2) ** 2) / 3)
    z2 = {d: (s - mean2) / std2 for d, s in SPARSE["q1"].items()}
    expected = {"a": z1["a"] + z2["a"], "b": z1["b"] + min(z2.values()),  # b absent from the sparse run
                "c": z1["c"] + z2["c"], "d": min(z1.values()) + z2["d"]}
    assert fused["q1"] == pytest.approx(expected)
    assert fused["q2"] == {"x": 0.0}  # one document: nothing to standardise against


def test_zscore_weights_and_ties():
    fused = mr.fuse([{"q": {"a": 2.0, "b": 2.0}}, {"q": {"a": 1.0, "b": 0.0}}], method="zscore", weights=[5, 2])
    assert fused["q"] == pytest.approx({"a": 2.0, "b": -2.0})  # the tied run adds nothing


def test_a_run_fused_with_itself_keeps_its_ranking():
    run = {"q1": {"a": 3.0, "b": 2.5, "c": 2.0, "d": -1.0}}
    qrels = {"q1": {"b": 1, "d": 2}}
    for method in ("rrf", "zscore"):
        fused = mr.fuse([run, run], method=method)
        assert sorted(fused["q1"], key=fused["q1"].get) == sorted(run["q1"], key=run["q1"].get)
        assert mr.evaluate(fused, qrels) == pytest.approx(mr.evaluate(run, qrels))


@pytest.mark.parametrize("kwargs,message", [
    ({"method": "max"}, "unknown fusion method"),
    ({"weights": [1]}, "1 weights for 2 runs"),
    ({"weights": [0, 0]}, "not all zero"),
    ({"weights": [1, -1]}, "non-negative"),
    ({"k": 0}, "positive number"),
    ({"top_k": 0}, "top_k"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mr.fuse([DENSE, SPARSE], **kwargs)


def test_bad_runs():
    with pytest.raises(ValueError, match="no runs"):
        mr.fuse([])
    with pytest.raises(ValueError, match="list of runs"):
        mr.fuse(DENSE)
    with pytest.raises(ValueError, match="not finite"):
        mr.fuse([{"q": {"a": float("nan")}}])
    with pytest.raises(ValueError, match="docid"):
        mr.fuse([{"q": [("a", 1.0)]}])
