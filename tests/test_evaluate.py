"""evaluate() against pytrec_eval (trec_eval's own code) per query, and trec_eval -c means."""
import numpy as np
import pytest
from conftest import shared_file

import mambaret as mr
from mambaret.evaluation import datasets

# our name -> pytrec_eval's measure and result key
PYTREC = {
    "ndcg@5": ("ndcg_cut.5", "ndcg_cut_5"),
    "ndcg@10": ("ndcg_cut.10", "ndcg_cut_10"),
    "recall@5": ("recall.5", "recall_5"),
    "recall@100": ("recall.100", "recall_100"),
    "p@5": ("P.5", "P_5"),
    "map": ("map", "map"),
    "map@5": ("map_cut.5", "map_cut_5"),
    "mrr": ("recip_rank", "recip_rank"),
}


def random_case(rng, min_rel):
    """Small integer scores (many ties), judged and unjudged docs, queries on one side only."""
    docs = [f"d{i}" for i in range(40)]
    qrels, run = {}, {}
    for q in range(12):
        qid = f"q{q}"
        if rng.random() < 0.9:
            judged = rng.choice(docs, size=int(rng.integers(1, 15)), replace=False)
            qrels[qid] = {str(d): int(rng.integers(min_rel, 4)) for d in judged}
        if rng.random() < 0.9:
            retrieved = rng.choice(docs, size=int(rng.integers(0, 30)), replace=False)
            run[qid] = {str(d): float(rng.integers(0, 6)) for d in retrieved}
    qrels.setdefault("q0", {"d0": 1})
    return run, qrels


def pytrec_values(run, qrels, measures):
    pytrec_eval = pytest.importorskip("pytrec_eval")
    return pytrec_eval.RelevanceEvaluator(qrels, set(measures)).evaluate(run)


def test_per_query_values_match_pytrec_eval_on_random_runs_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(150):
        # negative judgements included: trec_eval treats them as judged non-relevant
        run, qrels = random_case(rng, min_rel=-1)
        ours = mr.evaluate(run, qrels, list(PYTREC), per_query=True)
        theirs = pytrec_values(run, qrels, [m for m, _ in PYTREC.values()])
        assert theirs, "pytrec_eval evaluated nothing"
        for qid, values in theirs.items():
            for name, (_, key) in PYTREC.items():
                assert ours[qid][name] == pytest.approx(values[key], abs=1e-6), (qid, name)


def test_full_ndcg_matches_pytrec_eval():
    # kept to judgements >= 0: trec_eval's uncut ndcg does not terminate on negative ones
    rng = np.random.default_rng(1)
    for _ in range(100):
        run, qrels = random_case(rng, min_rel=0)
        ours = mr.evaluate(run, qrels, ["ndcg"], per_query=True)
        for qid, values in pytrec_values(run, qrels, ["ndcg"]).items():
            assert ours[qid]["ndcg"] == pytest.approx(values["ndcg"], abs=1e-6)


def cut_run(run, k):
    return {qid: dict(datasets.ranked(docs)[:k]) for qid, docs in run.items()}


def test_mrr_at_k_is_reciprocal_rank_of_the_cut_run():
    rng = np.random.default_rng(2)
    for _ in range(100):
        run, qrels = random_case(rng, min_rel=0)
        ours = mr.evaluate(run, qrels, ["mrr@3"], per_query=True)
        for qid, values in pytrec_values(cut_run(run, 3), qrels, ["recip_rank"]).items():
            assert ours[qid]["mrr@3"] == pytest.approx(values["recip_rank"], abs=1e-6)


def test_tie_order_is_docid_descending():
    qrels = {"q": {"a": 1}}
    # equal scores: trec_eval ranks "b" before "a", so "a" is at rank 2
    assert mr.evaluate({"q": {"a": 1.0, "b": 1.0}}, qrels, ["mrr"])["mrr"] == 0.5
    assert mr.evaluate({"q": {"b": 1.0, "a": 1.0}}, qrels, ["mrr"])["mrr"] == 0.5


def test_mean_follows_trec_eval_c():
    qrels = {"judged": {"a": 1}, "missing": {"b": 1}}
    run = {"judged": {"a": 2.0}, "unjudged": {"a": 1.0}}
    means = mr.evaluate(run, qrels, ["mrr@10", "recall@100"])
    assert means == {"mrr@10": 0.5, "recall@100": 0.5}
    per_query = mr.evaluate(run, qrels, ["mrr@10"], per_query=True)
    assert per_query == {"judged": {"mrr@10": 1.0}, "missing": {"mrr@10": 0.0}}


def test_default_metrics_and_names():
    result = mr.evaluate({"q": {"a": 1.0}}, {"q": {"a": 1}})
    assert list(result) == ["ndcg@10", "mrr@10", "recall@100", "map"]
    assert list(mr.evaluate({"q": {"a": 1.0}}, {"q": {"a": 1}}, ["NDCG@3", "precision@2"])) == ["ndcg@3", "p@2"]


@pytest.mark.parametrize("metric", ["bleu", "ndcg@0", "recall", "p", "ndcg@-1", "mrr@x"])
def test_bad_metric_names(metric):
    with pytest.raises(ValueError):
        mr.evaluate({"q": {"a": 1.0}}, {"q": {"a": 1}}, [metric])


def test_bad_runs_and_qrels():
    with pytest.raises(ValueError, match="NaN"):
        mr.evaluate({"q": {"a": float("nan")}}, {"q": {"a": 1}})
    with pytest.raises(ValueError, match="empty"):
        mr.evaluate({"q": {"a": 1.0}}, {})
    with pytest.raises(ValueError, match="must be a dict"):
        mr.evaluate([("q", "a")], {"q": {"a": 1}})


def test_vaswani_bm25_run_matches_pytrec_eval(tmp_path):
    pytest.importorskip("bm25s")
    from mambaret.evaluation.bm25 import bm25_run

    qrels = datasets.load_qrels(shared_file("vaswani", "qrels"))
    run = bm25_run(datasets.load_trec_docs(shared_file("vaswani", "doc-text.trec")),
                   datasets.load_trec_topics(shared_file("vaswani", "query-text.trec")), k=1000)
    # through a run file and back, as trec_eval would read it
    datasets.write_trec_run(run, tmp_path / "bm25.run")
    run = datasets.load_trec_run(tmp_path / "bm25.run")
    names = ["ndcg@10", "recall@100", "map", "p@5"]
    ours = mr.evaluate(run, qrels, names, per_query=True)
    theirs = pytrec_values(run, qrels, [PYTREC[n][0] for n in names] + ["ndcg_cut.10"])
    assert len(theirs) == 93
    for qid, values in theirs.items():
        for name in names:
            assert ours[qid][name] == pytest.approx(values[PYTREC[name][1]], abs=1e-6)
    means = mr.evaluate(run, qrels, names)
    assert means["map"] == pytest.approx(np.mean([v["map"] for v in theirs.values()]), abs=1e-9)
    assert means["map"] > 0.15  # BM25 on Vaswani: far above a random ranking (~0.01)


def test_integer_query_ids_match_their_string_forms():
    """Query ids are treated as document ids are: 7 and "7" are the same query."""
    run = {"1": {"a": 0.9, "b": 0.5}, "2": {"c": 0.7, "a": 0.1}}
    qrels = {"1": {"a": 1}, "2": {"a": 2}}
    expect = mr.evaluate(run, qrels, ["ndcg@10", "mrr@10"])
    assert expect["mrr@10"] > 0
    int_run = {int(q): docs for q, docs in run.items()}
    int_qrels = {int(q): docs for q, docs in qrels.items()}
    assert mr.evaluate(int_run, qrels, ["ndcg@10", "mrr@10"]) == expect
    assert mr.evaluate(run, int_qrels, ["ndcg@10", "mrr@10"]) == expect
    assert mr.evaluate(int_run, int_qrels, ["ndcg@10", "mrr@10"]) == expect
    assert set(mr.evaluate(int_run, int_qrels, ["mrr@10"], per_query=True)) == {1, 2}  # the qrels' own ids
    with pytest.raises(ValueError, match="twice"):
        mr.evaluate({1: {"a": 1.0}, "1": {"a": 1.0}}, qrels)
