"""The old import path of mambaret/evaluation/bm25.py, where the code lives now."""
from .evaluation.bm25 import BM25, bm25_run, require_bm25s

__all__ = ["BM25", "bm25_run", "require_bm25s"]
