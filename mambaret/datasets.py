"""The old import path of mambaret/evaluation/datasets.py, where the code lives now."""
from .evaluation.datasets import (load_trec_topics, iter_trec_docs, load_trec_docs, load_qrels,
                                  load_trec_run, write_trec_run, ranked, load_beir_corpus,
                                  load_beir_queries, load_beir_qrels, load_beir, document_text)

__all__ = ["load_trec_topics", "iter_trec_docs", "load_trec_docs", "load_qrels", "load_trec_run",
           "write_trec_run", "ranked", "load_beir_corpus", "load_beir_queries", "load_beir_qrels",
           "load_beir", "document_text"]
