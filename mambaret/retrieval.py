"""The old import path of mambaret/search/retrieval.py, where the code lives now."""
from .search.retrieval import Collection, Run, build_index, load_collection, search_run

__all__ = ["Collection", "Run", "build_index", "load_collection", "search_run"]
