"""MambaLlamaIndexEmbedding: LlamaIndex's BaseEmbedding, and a clear error without llama-index-core."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mambaret as mr
from mambaret.arch.random_model import write_random_model

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = {"query": "query: ", "document": "passage: "}
DOCS = ["cats purr when they are content", "dogs bark at strangers", "the stock market fell", "x", "yy"]


@pytest.fixture(scope="module")
def llamaindex():
    return pytest.importorskip("llama_index.core", reason="llama-index-core is not installed "
                               "(pip install 'mambaret[llamaindex]')")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, tokenizer_json):
    path = write_random_model(str(tmp_path_factory.mktemp("li")), seed=11, hidden_size=32, num_hidden_layers=2,
                              state_size=4, tokenizer_json=str(tokenizer_json))
    return mr.MambaEncoder.from_pretrained(path, threads=1, prompts=PROMPTS)


@pytest.fixture
def embedding(llamaindex, encoder):
    from mambaret.integrations.llamaindex import MambaLlamaIndexEmbedding

    return MambaLlamaIndexEmbedding(encoder, embed_batch_size=2)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_is_a_base_embedding(embedding):
    from llama_index.core.base.embeddings.base import BaseEmbedding

    assert isinstance(embedding, BaseEmbedding)
    assert embedding.class_name() == "MambaLlamaIndexEmbedding"
    assert embedding.model_name and embedding.embed_batch_size == 2


def test_queries_and_texts_match_the_encoder(embedding, encoder):
    query = embedding.get_query_embedding("why do cats purr")
    assert isinstance(query, list) and all(type(x) is float for x in query)
    np.testing.assert_allclose(query, _unit(encoder.encode_query("why do cats purr")), rtol=0, atol=1e-6)
    text = embedding.get_text_embedding(DOCS[0])
    np.testing.assert_allclose(text, _unit(encoder.encode_document(DOCS[0])), rtol=0, atol=1e-6)
    # five texts in batches of embed_batch_size=2, order kept
    batch = embedding.get_text_embedding_batch(DOCS)
    np.testing.assert_allclose(batch, _unit(encoder.encode_document(DOCS)), rtol=0, atol=1e-6)
    assert embedding._get_text_embeddings([]) == []


def test_async_variants_match(embedding):
    async def run():
        return await asyncio.gather(embedding.aget_query_embedding("hello"), embedding.aget_text_embedding(DOCS[1]),
                                    embedding.aget_text_embedding_batch(DOCS))

    query, text, batch = asyncio.run(run())
    assert query == embedding.get_query_embedding("hello")
    assert text == embedding.get_text_embedding(DOCS[1])
    assert batch == embedding.get_text_embedding_batch(DOCS)


def test_normalize_off(llamaindex, encoder):
    from mambaret.integrations.llamaindex import MambaLlamaIndexEmbedding

    raw = MambaLlamaIndexEmbedding(encoder, normalize=False)
    np.testing.assert_allclose(raw.get_query_embedding("a"), encoder.encode_query("a"), rtol=0, atol=1e-6)


def test_retrieval_through_a_vector_store_index(embedding):
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    index = VectorStoreIndex([TextNode(text=t, id_=str(i)) for i, t in enumerate(DOCS)], embed_model=embedding)
    hits = index.as_retriever(similarity_top_k=2).retrieve("cats purr")
    vectors = np.array(embedding.get_text_embedding_batch(DOCS))
    scores = vectors @ np.array(embedding.get_query_embedding("cats purr"))
    assert [h.node.node_id for h in hits] == [str(i) for i in np.argsort(-scores)[:2]]
    np.testing.assert_allclose([h.score for h in hits], np.sort(scores)[::-1][:2], atol=1e-5)


def test_bad_input(embedding, llamaindex, encoder):
    from mambaret.integrations.llamaindex import MambaLlamaIndexEmbedding

    with pytest.raises(TypeError):
        embedding.get_query_embedding(["not", "a", "str"])
    with pytest.raises(TypeError, match="item 1"):
        embedding._get_text_embeddings(["ok", None])
    with pytest.raises(TypeError, match="MambaEncoder or a model path"):
        MambaLlamaIndexEmbedding(3.5)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="embed_batch_size"):
        MambaLlamaIndexEmbedding(encoder, embed_batch_size=0)


def test_clear_import_error_without_llama_index():
    script = textwrap.dedent(f"""
        import sys
        sys.modules["llama_index"] = None
        sys.path.insert(0, {REPO_ROOT!r})
        import mambaret
        try:
            from mambaret import MambaLlamaIndexEmbedding
        except ImportError as exc:
            print("ImportError:", exc)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": REPO_ROOT})
    assert result.returncode == 0, result.stderr
    assert "ImportError: MambaLlamaIndexEmbedding needs llama-index-core" in result.stdout
    assert "pip install '.[llamaindex]'" in result.stdout
