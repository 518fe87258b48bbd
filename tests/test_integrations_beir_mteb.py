"""BeirEncoder and MtebEncoder: thin adapters over MambaEncoder, checked against the encoder
and, where installed, run inside BEIR's exact search and an MTEB evaluation."""
from __future__ import annotations

import os

import numpy as np
import pytest

import mambaret as mr
from mambaret.integrations.beir import BeirEncoder, corpus_texts
from mambaret.integrations.mteb import MtebEncoder
from mambaret.arch.random_model import write_random_model

PROMPTS = {"query": "query: ", "document": "passage: "}
CORPUS = {
    "d1": {"title": "Cats", "text": "Cats purr when they are content."},
    "d2": {"title": "", "text": "Dogs bark at strangers. "},
    "d3": {"text": "The stock market fell."},
    "d4": {"title": "Weather", "text": "Rain is expected tomorrow."},
}
JOINED = ["Cats Cats purr when they are content.", "Dogs bark at strangers.", "The stock market fell.",
          "Weather Rain is expected tomorrow."]
QUERIES = ["why do cats purr", "market news", "x"]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, tokenizer_json):
    path = write_random_model(str(tmp_path_factory.mktemp("beir")), seed=13, hidden_size=32, num_hidden_layers=2,
                              state_size=4, tokenizer_json=str(tokenizer_json))
    return mr.MambaEncoder.from_pretrained(path, threads=1, prompts=PROMPTS)


# -- BEIR -----------------------------------------------------------------------------------

def test_corpus_shapes_join_title_and_text_as_beir_does():
    assert corpus_texts(list(CORPUS.values())) == JOINED
    assert corpus_texts(CORPUS) == JOINED  # doc id -> document, in the dict's order
    columns = {"title": [d.get("title", "") for d in CORPUS.values()], "text": [d["text"] for d in CORPUS.values()]}
    assert corpus_texts(columns) == JOINED
    assert corpus_texts({"text": ["only text "]}) == ["only text"]
    assert corpus_texts([{"title": None, "text": "t"}]) == ["t"]
    assert corpus_texts([{"title": "a", "text": "b"}], sep=". ") == ["a. b"]
    assert corpus_texts([]) == []


def test_encode_queries_and_corpus_match_the_encoder(encoder):
    model = BeirEncoder(encoder)
    np.testing.assert_array_equal(model.encode_queries(QUERIES, batch_size=2),
                                  encoder.encode_query(QUERIES, batch_size=2))
    np.testing.assert_array_equal(model.encode_corpus(list(CORPUS.values()), batch_size=2),
                                  encoder.encode_document(JOINED, batch_size=2))
    assert model.encode_corpus([], batch_size=4).shape == (0, 32)


def test_beir_keyword_arguments_are_forwarded(encoder):
    torch = pytest.importorskip("torch")
    model = BeirEncoder(encoder, normalize_embeddings=True)
    out = model.encode_queries(QUERIES, batch_size=2, show_progress_bar=False, convert_to_tensor=True)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(out.numpy(), axis=1), 1.0, atol=1e-6)
    raw = model.encode_corpus(CORPUS, batch_size=2, normalize_embeddings=False)
    np.testing.assert_array_equal(raw, encoder.encode_document(JOINED, batch_size=2))


def test_beir_bad_input(encoder):
    model = BeirEncoder(encoder)
    with pytest.raises(TypeError):
        model.encode_queries(QUERIES, batch_size=2, no_such_argument=1)
    with pytest.raises(TypeError):
        model.encode_corpus(CORPUS, 2, no_such_argument=1)
    with pytest.raises(TypeError, match="no_such_argument"):
        BeirEncoder(encoder, no_such_argument=1)
    with pytest.raises(TypeError, match="list of queries"):
        model.encode_queries("one query", batch_size=2)
    with pytest.raises(TypeError, match="corpus item 1"):
        model.encode_corpus([{"text": "ok"}, "not a dict"], batch_size=2)
    with pytest.raises(ValueError, match="corpus item 0 has no 'text'"):
        model.encode_corpus([{"title": "t"}], batch_size=2)
    with pytest.raises(TypeError, match="must be str"):
        model.encode_corpus([{"title": 3, "text": "t"}], batch_size=2)
    with pytest.raises(ValueError, match="differ in length"):
        corpus_texts({"title": ["a"], "text": ["b", "c"]})
    with pytest.raises(TypeError, match="corpus must be"):
        corpus_texts("a string")


def test_inside_beir_exact_search(encoder):
    pytest.importorskip("beir", reason="beir is not installed")
    from beir.retrieval.evaluation import EvaluateRetrieval
    from beir.retrieval.search.dense import DenseRetrievalExactSearch

    search = DenseRetrievalExactSearch(BeirEncoder(encoder, normalize_embeddings=True), batch_size=2)
    retriever = EvaluateRetrieval(search, score_function="dot", k_values=[1, 3])
    queries = {f"q{i}": q for i, q in enumerate(QUERIES)}
    results = retriever.retrieve(CORPUS, queries)
    q = encoder.encode_query(QUERIES, normalize_embeddings=True)
    d = encoder.encode_document(JOINED, normalize_embeddings=True)
    ids = list(CORPUS)
    for i, qid in enumerate(queries):
        ranked = sorted(results[qid], key=results[qid].get, reverse=True)
        assert ranked[0] == ids[int(np.argmax(q[i] @ d.T))]
        assert results[qid][ranked[0]] == pytest.approx(float(np.max(q[i] @ d.T)), abs=1e-5)


# -- MTEB -----------------------------------------------------------------------------------

class _TaskMetadata:
    def __init__(self, name, type_):
        self.name = name
        self.type = type_


def test_mteb_encode_returns_numpy_with_the_right_prompt(encoder):
    model = MtebEncoder(encoder)
    out = model.encode(QUERIES, task_name="NFCorpus", prompt_type="query")
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, 32)
    np.testing.assert_array_equal(out, encoder.encode_query(QUERIES))
    np.testing.assert_array_equal(model.encode(QUERIES, task_name="NFCorpus", prompt_type="document"),
                                  encoder.encode_document(QUERIES))
    np.testing.assert_array_equal(model.encode(QUERIES, task_name="STS12"), encoder.encode(QUERIES))


def test_mteb_prompt_priority(encoder):
    prompts = {"NFCorpus-query": "a: ", "NFCorpus": "b: ", "Retrieval-query": "c: ", "Retrieval": "d: ",
               "query": "e: "}
    meta = _TaskMetadata("NFCorpus", "Retrieval")
    for key, prompt in prompts.items():
        model = MtebEncoder(encoder, prompts={k: v for k, v in prompts.items() if k == key or
                                              list(prompts).index(k) > list(prompts).index(key)})
        np.testing.assert_array_equal(model.encode(QUERIES, task_metadata=meta, prompt_type="query"),
                                      encoder.encode(QUERIES, prompt=prompt), err_msg=key)


def test_mteb_batches_and_keyword_arguments(encoder):
    model = MtebEncoder(encoder, batch_size=1)
    batches = [{"text": QUERIES[:2]}, {"text": QUERIES[2:]}]  # what mteb 2.x's DataLoader yields
    out = model.encode(iter(batches), task_metadata=_TaskMetadata("T", "STS"), hf_split="test",
                       hf_subset="default", normalize_embeddings=True, convert_to_tensor=True)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, encoder.encode(QUERIES, normalize_embeddings=True, batch_size=1))
    sim = model.similarity(out, out)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-6)
    np.testing.assert_allclose(model.similarity_pairwise(out, out[::-1]), np.diag(sim[:, ::-1]), atol=1e-6)


def test_mteb_bad_input(encoder):
    model = MtebEncoder(encoder)
    with pytest.raises(TypeError):
        model.encode(QUERIES, task_name="T", no_such_argument=1)
    with pytest.raises(TypeError, match="no_such_argument"):
        MtebEncoder(encoder, no_such_argument=1)
    with pytest.raises(ValueError, match="prompt_type"):
        model.encode(QUERIES, task_name="T", prompt_type="passage")
    with pytest.raises(TypeError, match="single str"):
        model.encode("one sentence", task_name="T")
    with pytest.raises(TypeError, match="item 1"):
        model.encode(["ok", 2], task_name="T")
    with pytest.raises(TypeError, match="item 0: expected a str or a batch"):
        model.encode(iter([{"image": []}]), task_name="T")
    with pytest.raises(TypeError, match="list of str"):
        model.encode([{"text": ["ok", None]}], task_name="T")
    with pytest.raises(TypeError, match="list of str"):
        model.encode({"text": ["a"]}, task_name="T")
    with pytest.raises(TypeError, match="str to str"):
        MtebEncoder(encoder, prompts={"query": 1})
    with pytest.raises(ValueError, match="equal shapes"):
        model.similarity_pairwise(np.ones((2, 3)), np.ones((3, 3)))


def test_inside_an_mteb_evaluation(encoder):
    mteb = pytest.importorskip("mteb", reason="mteb is not installed")
    from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask
    from mteb.models.models_protocols import EncoderProtocol
    from mteb.types import PromptType

    model = MtebEncoder(encoder)
    assert isinstance(model, EncoderProtocol)
    assert model.mteb_model_meta.embed_dim == 32
    task = MockRetrievalTask()
    out = model.encode([{"text": ["a", "b"]}], task_metadata=task.metadata, hf_split="test", hf_subset="default",
                       prompt_type=PromptType.query)
    np.testing.assert_array_equal(out, encoder.encode_query(["a", "b"]))
    results = mteb.evaluate(model, [task], cache=None, show_progress_bar=False)
    score = results.task_results[0].get_score()
    assert 0.0 <= score <= 1.0


def test_top_level_names():
    assert mr.BeirEncoder is BeirEncoder and mr.MtebEncoder is MtebEncoder
    assert "MtebEncoder" in dir(mr)
    with pytest.raises(AttributeError):
        mr.NoSuchName  # noqa: B018
    assert os.path.basename(mr.__file__) == "__init__.py"
