"""A BM25 baseline, reported beside the dense model.

Uses the ``bm25s`` package (a dependency of the base install since 0.2.0; the ``bm25`` extra,
``pip install ".[bm25]"``, names it too), imported only when a BM25 index is built; callers that
do other work first check it with :func:`require_bm25s`. Results come back as a run,
``{qid: {docid: score}}``, ready for :func:`mambaret.evaluate` and :func:`mambaret.evaluation.datasets.write_trec_run`.
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Optional, Union

from .datasets import document_text

__all__ = ["BM25", "bm25_run", "require_bm25s"]

Document = Union[str, Mapping[str, str]]


BM25S_MISSING = ('BM25 needs the bm25s package, which this install lacks: pip install bm25s '
                 '(or pip install ".[bm25]" from the mambaret repository)')


def require_bm25s():
    """The bm25s module, or an ImportError of one line saying how to install it. Commands that
    encode before they rank by BM25 call it first, so a missing package fails before the work."""
    try:
        import bm25s
    except ImportError:
        raise ImportError(BM25S_MISSING) from None
    return bm25s



def _resolve_stemmer(stemmer) -> Optional[Callable]:
    if stemmer is None or callable(stemmer):
        return stemmer
    if isinstance(stemmer, str):
        try:
            import Stemmer
        except ImportError:
            raise ImportError(
                f"stemmer={stemmer!r} needs the 'PyStemmer' package: pip install PyStemmer") from None
        return Stemmer.Stemmer(stemmer).stemWords
    raise ValueError(f"stemmer must be None, a language name or a callable, got {stemmer!r}")



class BM25:
    """BM25 over a corpus ``{docid: text or {"title", "text"}}``.

    ``k1``, ``b`` and ``method`` are bm25s's (``"lucene"`` by default); ``stopwords`` is a
    language code or a list of words (None keeps every word); ``stemmer`` is None, a callable
    over a list of words, or a language name for PyStemmer. ``show_progress`` draws bm25s's
    progress bars while indexing and searching (long on a large corpus).
    """

    def __init__(self, corpus: Mapping[str, Document], k1: float = 1.5, b: float = 0.75,
                 method: str = "lucene", stopwords="en", stemmer=None, show_progress: bool = False):
        bm25s = require_bm25s()
        if not isinstance(corpus, Mapping):
            raise ValueError("corpus must be a dict {docid: text}")
        if len(corpus) == 0:
            raise ValueError("the corpus is empty: there is nothing to index")
        self._bm25s = bm25s
        self._stopwords = stopwords
        self._stemmer = _resolve_stemmer(stemmer)
        self.show_progress = bool(show_progress)
        self.doc_ids = [str(docid) for docid in corpus]
        tokens = bm25s.tokenize([document_text(doc) for doc in corpus.values()],
                                stopwords=stopwords, stemmer=self._stemmer, show_progress=self.show_progress)
        self._retriever = None
        # a corpus of stopwords only has no term to index (bm25s would fail on it): every search
        # then finds nothing, as no query term can match
        if _has_terms(tokens):
            self._retriever = bm25s.BM25(k1=k1, b=b, method=method)
            self._retriever.index(tokens, show_progress=self.show_progress)

    def search(self, queries: Mapping[str, str], k: int = 1000) -> Dict[str, Dict[str, float]]:
        """The top ``k`` documents of each query as a run. Documents that share no term with the
        query (score 0) are left out, so a query may get fewer than k documents."""
        if not isinstance(k, int) or k <= 0:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if not isinstance(queries, Mapping):
            raise ValueError("queries must be a dict {qid: text}")
        run: Dict[str, Dict[str, float]] = {qid: {} for qid in queries}
        if not queries or self._retriever is None:
            return run
        texts = list(queries.values())
        for text in texts:
            if not isinstance(text, str):
                raise ValueError(f"query texts must be str, got {type(text).__name__}")
        tokens = self._bm25s.tokenize(texts, stopwords=self._stopwords, stemmer=self._stemmer,
                                      show_progress=False)
        if not _has_terms(tokens):  # only stopwords in every query: nothing can match
            return run
        top = min(k, len(self.doc_ids))
        positions, scores = self._retriever.retrieve(tokens, k=top, show_progress=self.show_progress)
        for qid, row_positions, row_scores in zip(queries, positions, scores):
            run[qid] = {self.doc_ids[int(p)]: float(s)
                        for p, s in zip(row_positions, row_scores) if s > 0}
        return run


def _has_terms(tokens) -> bool:
    """Whether bm25s's tokenized texts hold any term (a tuple of (ids, vocab), or lists)."""
    vocab = getattr(tokens, "vocab", None)
    if vocab is not None:
        return bool(vocab) and any(len(ids) for ids in tokens.ids)
    return any(len(t) for t in tokens)


def bm25_run(corpus: Mapping[str, Document], queries: Mapping[str, str], k: int = 1000,
             **options) -> Dict[str, Dict[str, float]]:
    """One-call BM25: indexes ``corpus`` and returns the run of ``queries`` (see :class:`BM25`)."""
    return BM25(corpus, **options).search(queries, k=k)
