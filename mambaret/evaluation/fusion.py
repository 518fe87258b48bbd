"""Fusion of ranked runs: reciprocal-rank fusion and normalised-score (z-score) fusion.

A run is ``{qid: {docid: score}}`` as everywhere in mambaret; each query's documents are ranked as
trec_eval ranks them (score descending, ties by docid descending, see :func:`datasets.ranked`).

- ``rrf``: a document's fused score is ``sum_i w_i / (k + rank_i)``, rank from 1 in run i, with
  nothing added by a run that did not return it (Cormack, Clarke and Buettcher, SIGIR 2009).
- ``zscore``: each run's scores for a query are standardised, ``(s - mean) / std`` over the
  documents that run returned for it (all zero when they are all equal), then summed with the
  weights. A document a run did not return takes that run's lowest standardised score for the
  query: it ranked below everything the run returned, and a missing score must not beat a low one.

A query that a run does not have at all adds nothing to any document's score from that run.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

from .datasets import ranked

__all__ = ["fuse", "FUSION_METHODS"]

Run = Dict[str, Dict[str, float]]
FUSION_METHODS = ("rrf", "zscore")


def _check_runs(runs) -> list:
    if isinstance(runs, Mapping):
        raise ValueError("runs must be a list of runs [{qid: {docid: score}}, ...], not one run")
    runs = list(runs)
    if not runs:
        raise ValueError("no runs to fuse")
    for n, run in enumerate(runs):
        if not isinstance(run, Mapping):
            raise ValueError(f"run {n} must be a dict {{qid: {{docid: score}}}}, got {type(run).__name__}")
        for qid, docs in run.items():
            if not isinstance(docs, Mapping):
                raise ValueError(f"run {n}, query {qid!r}: expected {{docid: score}}, got {type(docs).__name__}")
            for docid, score in docs.items():
                if not math.isfinite(float(score)):
                    raise ValueError(f"run {n}, query {qid!r}, document {docid!r}: score {score!r} is not finite")
    return runs


def _check_weights(weights: Optional[Sequence[float]], count: int) -> list:
    if weights is None:
        return [1.0] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"{len(weights)} weights for {count} runs")
    if any(not math.isfinite(w) or w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {weights}")
    return weights


def _rrf(docs: Mapping[str, float], weight: float, k: float, fused: Dict[str, float]) -> None:
    for rank, (docid, _) in enumerate(ranked(docs), 1):
        fused[docid] = fused.get(docid, 0.0) + weight / (k + rank)


def _standardised(docs: Mapping[str, float]) -> Dict[str, float]:
    values = [float(s) for s in docs.values()]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    if std == 0.0:  # one document, or all tied: nothing to tell them apart
        return {docid: 0.0 for docid in docs}
    return {docid: (float(s) - mean) / std for docid, s in docs.items()}


def fuse(runs: Sequence[Mapping[str, Mapping[str, float]]], method: str = "rrf",
         weights: Optional[Sequence[float]] = None, k: float = 60, top_k: Optional[int] = None) -> Run:
    """Fuses ``runs`` (a list of ``{qid: {docid: score}}``) into one run over every query and
    document they hold.

    method: ``"rrf"`` (reciprocal-rank fusion with constant ``k``) or ``"zscore"`` (sum of
    per-query standardised scores). weights: one non-negative number per run (default all 1).
    top_k: keep each query's best ``top_k`` fused documents (default all).
    """
    if method not in FUSION_METHODS:
        raise ValueError(f"unknown fusion method {method!r}; use one of {', '.join(FUSION_METHODS)}")
    runs = _check_runs(runs)
    weights = _check_weights(weights, len(runs))
    if method == "rrf" and (isinstance(k, bool) or not isinstance(k, (int, float)) or not k > 0
                            or not math.isfinite(k)):
        raise ValueError(f"the RRF constant k must be a positive number, got {k!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")

    qids = list(dict.fromkeys(qid for run in runs for qid in run))
    fused_run: Run = {}
    for qid in qids:
        fused: Dict[str, float] = {}
        if method == "rrf":
            for run, weight in zip(runs, weights):
                if run.get(qid):
                    _rrf(run[qid], weight, float(k), fused)
        else:
            per_run = [_standardised(run[qid]) if run.get(qid) else None for run in runs]
            docids = dict.fromkeys(d for z in per_run if z for d in z)
            for docid in docids:
                total = 0.0
                for z, weight in zip(per_run, weights):
                    if z is not None:
                        total += weight * z.get(docid, min(z.values()))
                fused[docid] = total
        if top_k is not None:
            fused = dict(ranked(fused)[:top_k])
        fused_run[qid] = fused
    return fused_run
