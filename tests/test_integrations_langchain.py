"""MambaEmbeddings: LangChain's embeddings interface, with and without langchain-core."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mambaret as mr
from mambaret.integrations.langchain import LANGCHAIN_AVAILABLE, MambaEmbeddings
from mambaret.arch.random_model import write_random_model

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = {"query": "query: ", "document": "passage: "}
DOCS = ["cats purr when they are content", "dogs bark at strangers", "the stock market fell", "x"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer_json):
    return write_random_model(str(tmp_path_factory.mktemp("lc")), seed=7, hidden_size=32, num_hidden_layers=2,
                              state_size=4, tokenizer_json=str(tokenizer_json))


@pytest.fixture(scope="module")
def encoder(model_dir):
    return mr.MambaEncoder.from_pretrained(model_dir, threads=1, prompts=PROMPTS)


@pytest.fixture
def embeddings(encoder):
    return MambaEmbeddings(encoder)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_documents_and_queries_match_the_encoder(embeddings, encoder):
    vectors = embeddings.embed_documents(DOCS)
    assert isinstance(vectors, list) and all(isinstance(v, list) for v in vectors)
    assert all(type(x) is float for x in vectors[0]) and len(vectors[0]) == 32
    np.testing.assert_allclose(vectors, _unit(encoder.encode_document(DOCS)), rtol=0, atol=1e-6)
    query = embeddings.embed_query("why do cats purr")
    assert isinstance(query, list) and all(type(x) is float for x in query)
    np.testing.assert_allclose(query, _unit(encoder.encode_query("why do cats purr")), rtol=0, atol=1e-6)
    # queries and documents carry different prompts
    assert not np.allclose(embeddings.embed_query(DOCS[0]), vectors[0], atol=1e-3)


def test_normalize_off_and_encode_kwargs(encoder):
    raw = MambaEmbeddings(encoder, normalize=False, encode_kwargs={"batch_size": 1},
                          query_encode_kwargs={"prompt": ""})
    np.testing.assert_allclose(raw.embed_documents(DOCS), encoder.encode_document(DOCS), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(raw.embed_query(DOCS[0]), encoder.encode(DOCS[0]), rtol=0, atol=1e-6)
    # per-call keyword arguments reach encode
    np.testing.assert_allclose(raw.embed_documents(DOCS, prompt_name="query"), encoder.encode_query(DOCS), rtol=1e-5,
                               atol=1e-6)


def test_loads_from_a_path(model_dir):
    embeddings = MambaEmbeddings(model_dir, model_kwargs={"threads": 1, "pooling": "mean"})
    assert embeddings.encoder.pooling == "mean"
    assert len(embeddings.embed_query("hello")) == 32


def test_async_variants_match(embeddings):
    async def run():
        return await asyncio.gather(embeddings.aembed_documents(DOCS), embeddings.aembed_query("hello"))

    documents, query = asyncio.run(run())
    assert documents == embeddings.embed_documents(DOCS)
    assert query == embeddings.embed_query("hello")


def test_empty_input(embeddings):
    assert embeddings.embed_documents([]) == []


def test_bad_input(embeddings, encoder):
    with pytest.raises(TypeError, match="embed_query"):
        embeddings.embed_documents("a single string")
    with pytest.raises(TypeError, match="item 1"):
        embeddings.embed_documents(["ok", 3])
    with pytest.raises(TypeError):
        embeddings.embed_query(["a list"])
    with pytest.raises(TypeError):
        embeddings.embed_documents(DOCS, no_such_argument=1)
    with pytest.raises(TypeError):
        asyncio.run(embeddings.aembed_query("x", no_such_argument=1))
    with pytest.raises(TypeError, match="no_such_argument"):
        MambaEmbeddings(encoder, encode_kwargs={"no_such_argument": 1})
    with pytest.raises(TypeError, match="convert_to_tensor"):
        embeddings.embed_documents(DOCS, convert_to_tensor=True)
    with pytest.raises(TypeError, match="MambaEncoder or a model path"):
        MambaEmbeddings(42)
    with pytest.raises(ValueError, match="model_kwargs"):
        MambaEmbeddings(encoder, model_kwargs={"threads": 1})


@pytest.mark.skipif(not LANGCHAIN_AVAILABLE, reason="langchain-core is not installed (pip install 'mambaret[langchain]')")
def test_is_a_langchain_embeddings_and_works_in_a_vector_store(embeddings):
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore

    assert isinstance(embeddings, Embeddings)
    store = InMemoryVectorStore.from_texts(DOCS, embedding=embeddings)
    # the store's cosine ranking is ours: the best document for a query is the argmax of dot products
    query = "cats purr"
    expected = DOCS[int(np.argmax(np.array(embeddings.embed_documents(DOCS)) @ embeddings.embed_query(query)))]
    assert store.similarity_search(query, k=1)[0].page_content == expected
    found = asyncio.run(store.asimilarity_search(query, k=1))
    assert found[0].page_content == expected


@pytest.mark.skipif(not LANGCHAIN_AVAILABLE, reason="langchain-core is not installed (pip install 'mambaret[langchain]')")
@pytest.mark.parametrize("method", ["rrf", "zscore"])
def test_hybrid_retriever_is_the_fusion_of_dense_and_bm25(encoder, method):
    pytest.importorskip("bm25s")
    from langchain_core.retrievers import BaseRetriever

    from mambaret.evaluation.bm25 import bm25_run
    from mambaret.integrations.langchain import MambaHybridRetriever

    retriever = MambaHybridRetriever.from_texts(DOCS, encoder, metadatas=[{"n": i} for i in range(len(DOCS))],
                                                ids=[f"doc{i}" for i in range(len(DOCS))], k=3, method=method,
                                                weights=[1.0, 2.0])
    assert isinstance(retriever, BaseRetriever) and mr.MambaHybridRetriever is MambaHybridRetriever
    query = "why do cats purr"
    found = retriever.invoke(query)
    # expected: the dense ranking (dot products of normalised vectors) and BM25's, fused by mr.fuse
    docs = _unit(encoder.encode_document(DOCS))
    dense = {str(i): float(s) for i, s in enumerate(docs @ _unit(encoder.encode_query(query)))}
    sparse = bm25_run({str(i): t for i, t in enumerate(DOCS)}, {"q": query}, k=100)["q"]
    expected = mr.fuse([{"q": dense}, {"q": sparse}], method=method, weights=[1.0, 2.0], top_k=3)["q"]
    ranking = sorted(expected.items(), key=lambda item: -item[1])
    assert [d.page_content for d in found] == [DOCS[int(key)] for key, _ in ranking]
    assert [d.metadata["score"] for d in found] == pytest.approx([score for _, score in ranking], abs=1e-6)
    assert found[0].id == f"doc{ranking[0][0]}" and found[0].metadata["n"] == int(ranking[0][0])
    assert asyncio.run(retriever.ainvoke(query)) == found
    # BM25 alone puts the cat passage first: a heavy BM25 weight keeps it there
    heavy = MambaHybridRetriever.from_texts(DOCS, encoder, k=1, weights=[0.0, 1.0])
    assert heavy.invoke("cats purr")[0].page_content == DOCS[0]
    with pytest.raises(ValueError, match="fusion method"):
        MambaHybridRetriever.from_texts(DOCS, encoder, method="max")
    with pytest.raises(ValueError, match="no documents"):
        MambaHybridRetriever.from_texts([], encoder)


def test_works_without_langchain_core(model_dir):
    # a fresh interpreter where importing langchain_core fails, as on a machine without it
    script = textwrap.dedent(f"""
        import sys
        sys.modules["langchain_core"] = None
        sys.modules["langchain_core.embeddings"] = None
        sys.path.insert(0, {REPO_ROOT!r})
        from mambaret.integrations.langchain import LANGCHAIN_AVAILABLE, MambaEmbeddings
        assert not LANGCHAIN_AVAILABLE
        assert MambaEmbeddings.__mro__[1] is object
        e = MambaEmbeddings({model_dir!r}, model_kwargs={{"threads": 1}})
        docs = e.embed_documents(["a", "bb"])
        assert len(docs) == 2 and len(docs[0]) == 32
        import asyncio
        assert asyncio.run(e.aembed_query("a")) == e.embed_query("a")
        from mambaret.integrations.langchain import MambaHybridRetriever
        try:
            MambaHybridRetriever.from_texts(["a"], e.encoder)
        except ImportError as exc:
            assert "langchain-core" in str(exc)
        else:
            raise AssertionError("the hybrid retriever needs langchain-core")
        print("standalone ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": REPO_ROOT})
    assert result.returncode == 0, result.stderr
    assert "standalone ok" in result.stdout
