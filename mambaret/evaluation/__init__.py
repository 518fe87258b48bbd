"""Judging rankings: metrics (metrics.py: evaluate, evaluate_by_group, trec_eval's conventions),
run fusion (fusion.py), the BM25 baseline (bm25.py) and TREC / BEIR collection readers and run
writers (datasets.py)."""
