"""Ranking metrics with trec_eval's conventions.

- A run is ``{qid: {docid: score}}``; qrels are ``{qid: {docid: rel}}``. Query and document ids
  are compared as strings, so integer ids match their string forms.
- Each query's documents are ranked by score descending, ties by docid descending (trec_eval
  sorts that way; the order of the dict does not matter).
- A document is relevant when its judgement is >= 1; nDCG's gain is the judgement itself
  (judgements <= 0 gain nothing), with a log2(rank + 1) discount.
- ``@k`` measures look at the first k ranked documents only: ``mrr@k`` is the reciprocal rank of
  the first relevant document among them (0 when there is none), ``recall@k`` divides by all the
  query's relevant documents, ``p@k`` by k, ``map@k`` is trec_eval's ``map_cut``.
- Means follow ``trec_eval -c``: every judged query counts, a judged query missing from the run
  scores 0, and queries without judgements are left out.

Per-query values equal pytrec_eval's ``ndcg_cut_k``, ``recall_k``, ``P_k``, ``map``,
``map_cut_k`` and ``recip_rank`` (the last on the run cut to k for ``mrr@k``).
"""

from __future__ import annotations

import math
import re
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

from .datasets import ranked

__all__ = ["evaluate", "evaluate_by_group", "parse_metric", "DEFAULT_METRICS"]

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100", "map")

_KINDS = {"ndcg": "ndcg", "mrr": "mrr", "recall": "recall", "p": "p", "precision": "p", "map": "map"}
_NEEDS_CUTOFF = {"recall", "p"}
_METRIC = re.compile(r"^([a-z]+)(?:@(\d+))?$")


def parse_metric(name: str) -> Tuple[str, Optional[int]]:
    """``"ndcg@10"`` -> ``("ndcg", 10)``; ``"map"`` -> ``("map", None)``. Raises ValueError."""
    if not isinstance(name, str):
        raise ValueError(f"metric names are strings, got {name!r}")
    m = _METRIC.match(name.strip().lower())
    kind = _KINDS.get(m.group(1)) if m else None
    if kind is None:
        raise ValueError(
            f"unknown metric {name!r}; use ndcg[@k], mrr[@k], recall@k, p@k (precision@k) or map[@k]")
    cutoff = int(m.group(2)) if m.group(2) is not None else None
    if cutoff is not None and cutoff <= 0:
        raise ValueError(f"metric {name!r}: the cutoff must be positive")
    if cutoff is None and kind in _NEEDS_CUTOFF:
        raise ValueError(f"metric {name!r} needs a cutoff, e.g. {kind}@10")
    return kind, cutoff


def _canonical(kind: str, cutoff: Optional[int]) -> str:
    return kind if cutoff is None else f"{kind}@{cutoff}"


def _query_value(kind: str, cutoff: Optional[int], rels: List[int], judged: Mapping[str, int],
                 num_rel: int) -> float:
    """One measure for one query; ``rels`` are the judgements of the ranked documents (0 when
    unjudged), already in rank order."""
    top = rels if cutoff is None else rels[:cutoff]
    if kind == "mrr":
        for rank, rel in enumerate(top, 1):
            if rel >= 1:
                return 1.0 / rank
        return 0.0
    if kind == "recall":
        return sum(rel >= 1 for rel in top) / num_rel if num_rel else 0.0
    if kind == "p":
        return sum(rel >= 1 for rel in top) / cutoff
    if kind == "map":
        if not num_rel:
            return 0.0
        hits, total = 0, 0.0
        for rank, rel in enumerate(top, 1):
            if rel >= 1:
                hits += 1
                total += hits / rank
        return total / num_rel
    # ndcg: the ideal ranking puts the judged documents in decreasing order of gain
    dcg = sum(rel / math.log2(rank + 1) for rank, rel in enumerate(top, 1) if rel > 0)
    ideal = sorted((rel for rel in judged.values() if rel > 0), reverse=True)
    if cutoff is not None:
        ideal = ideal[:cutoff]
    idcg = sum(rel / math.log2(rank + 1) for rank, rel in enumerate(ideal, 1))
    return dcg / idcg if idcg > 0 else 0.0


def _check_run(run: Mapping[str, Mapping[str, float]]) -> None:
    if not isinstance(run, Mapping):
        raise ValueError(f"run must be a dict {{qid: {{docid: score}}}}, got {type(run).__name__}")
    for qid, docs in run.items():
        if not isinstance(docs, Mapping):
            raise ValueError(f"run[{qid!r}] must be a dict {{docid: score}}, got {type(docs).__name__}")
        for docid, score in docs.items():
            if math.isnan(float(score)):
                raise ValueError(f"run[{qid!r}][{docid!r}] is NaN")


def evaluate(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
             metrics: Iterable[str] = DEFAULT_METRICS, per_query: bool = False
             ) -> Union[Dict[str, float], Dict[str, Dict[str, float]]]:
    """Scores ``run`` against ``qrels``.

    Returns ``{metric: mean over judged queries}``, or with ``per_query=True``
    ``{qid: {metric: value}}`` for every judged query. Metric names are given back in canonical
    form (lower case, ``precision@k`` as ``p@k``).
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    specs = [parse_metric(m) for m in metrics]
    if not specs:
        raise ValueError("no metrics asked for")
    names = [_canonical(kind, cutoff) for kind, cutoff in specs]
    _check_run(run)
    if not isinstance(qrels, Mapping):
        raise ValueError(f"qrels must be a dict {{qid: {{docid: rel}}}}, got {type(qrels).__name__}")

    if not qrels:
        raise ValueError("qrels are empty: there is nothing to evaluate against")
    # query ids are compared as strings, as document ids are: 7 and "7" are one query
    run_by_qid: Dict[str, Mapping[str, float]] = {}
    for qid, docs in run.items():
        if str(qid) in run_by_qid:
            raise ValueError(f"run holds query {qid!r} twice (as {str(qid)!r} and {qid!r})")
        run_by_qid[str(qid)] = docs
    values: Dict[str, Dict[str, float]] = {}
    for qid, judged in qrels.items():
        judged = {str(d): int(r) for d, r in judged.items()}
        docs = run_by_qid.get(str(qid), {})
        rels = [judged.get(str(docid), 0) for docid, _ in ranked({str(d): float(s) for d, s in docs.items()})]
        num_rel = sum(rel >= 1 for rel in judged.values())
        values[qid] = {name: _query_value(kind, cutoff, rels, judged, num_rel)
                       for name, (kind, cutoff) in zip(names, specs)}
    if per_query:
        return values
    return {name: sum(v[name] for v in values.values()) / len(values) for name in names}


def evaluate_by_group(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                      groups: Mapping[str, str], metrics: Iterable[str] = ("ndcg@10", "mrr@10")
                      ) -> Dict[str, Dict[str, float]]:
    """Means of ``metrics`` over the judged queries of each group, e.g. by document length.

    ``groups`` maps a query id to its group's label (``{"q1": "4k", "q2": "32k"}``); judged
    queries without a label are left out, labels without a judged query do not appear. Returns
    ``{label: {metric: mean, "queries": count}}``, labels in order of first appearance in
    ``groups``, with the same conventions as :func:`evaluate` (a judged query missing from the
    run scores 0).
    """
    if not isinstance(groups, Mapping):
        raise ValueError(f"groups must be a dict {{qid: label}}, got {type(groups).__name__}")
    judged = {qid: qrels[qid] for qid in groups if qid in qrels}
    if not judged:
        raise ValueError("no query of groups is judged in qrels: there is nothing to evaluate")
    values = evaluate(run, judged, metrics, per_query=True)
    names = list(next(iter(values.values())))
    out: Dict[str, Dict[str, float]] = {}
    members: Dict[str, List[str]] = {}
    for qid, label in groups.items():
        if qid in values:
            members.setdefault(str(label), []).append(qid)
    for label, qids in members.items():
        out[label] = {name: sum(values[q][name] for q in qids) / len(qids) for name in names}
        out[label]["queries"] = len(qids)
    return out
