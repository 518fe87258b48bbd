"""The packaged default model: where it is, that it loads offline, that the name "default" and
the command line reach it, and that transformers and sentence-transformers embed like we do."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import mambaret as mr
from mambaret.app import cli
from mambaret.app.cli import build_parser, main
from mambaret.models import DEFAULT_MODEL
from mambaret.arch.paths import resolve_model_path
from tiny_collection import DOCS, QRELS, TOPICS

TEXTS = ["hello world", "what is a state space model?", "x",
         "Mamba encoders read left to right, so the last token sees the whole text.",
         "The quick brown fox jumps over the lazy dog."]


@pytest.fixture(scope="module")
def encoder():
    return mr.MambaEncoder.from_pretrained(DEFAULT_MODEL, threads=1)


@pytest.fixture
def collection(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "doc-text.trec").write_text(DOCS)
    (folder / "query-text.trec").write_text(TOPICS)
    (folder / "qrels").write_text(QRELS)
    return folder


def _hidden_size() -> int:
    with open(os.path.join(DEFAULT_MODEL, "config.json"), encoding="utf-8") as f:
        return json.load(f)["hidden_size"]


def test_default_model_is_the_packaged_folder():
    assert mr.DEFAULT_MODEL == DEFAULT_MODEL and "DEFAULT_MODEL" in mr.__all__
    assert os.path.isabs(DEFAULT_MODEL)
    assert os.path.samefile(DEFAULT_MODEL, os.path.join(os.path.dirname(mr.__file__), "models", "default"))
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert os.path.isfile(os.path.join(DEFAULT_MODEL, name)), name


def test_default_model_loads_offline_and_encodes_unit_vectors(encoder):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert encoder.tokenizer is not None and encoder.embedding_dim == _hidden_size()
    emb = encoder.encode(TEXTS, normalize_embeddings=True)
    assert emb.shape == (len(TEXTS), _hidden_size()) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=0, atol=1e-5)
    # the ids end with the model's EOS, [SEP] for this WordPiece tokenizer
    assert all(ids[-1] == encoder.dims.eos_token_id for ids in encoder.tokenize(TEXTS))


def test_the_name_default_resolves_unless_a_path_of_that_name_exists(encoder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_model_path("default") == DEFAULT_MODEL
    loaded = mr.MambaEncoder.from_pretrained("default", threads=1)
    assert loaded.model_dir == DEFAULT_MODEL
    np.testing.assert_array_equal(loaded.encode(TEXTS[:2]), encoder.encode(TEXTS[:2]))
    from mambaret.arch.random_model import write_random_model

    write_random_model(str(tmp_path / "default"), seed=1, hidden_size=8, num_hidden_layers=1, vocab_size=40)
    assert resolve_model_path("default") == "default"  # an existing path wins
    assert mr.MambaEncoder.from_pretrained("default", threads=1).embedding_dim == 8


def test_training_and_ray_entry_points_resolve_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from mambaret.encoding.distributed import _check_model_folder

    assert _check_model_folder("default") == DEFAULT_MODEL
    pytest.importorskip("torch")
    from mambaret.nn import MambaModel
    from mambaret.train import resolve_model_dir

    assert resolve_model_dir("default") == DEFAULT_MODEL
    assert MambaModel.from_pretrained("default").embeddings.weight.shape[1] == _hidden_size()


def test_integrations_take_the_name_default():
    from mambaret.integrations._common import load_encoder

    assert load_encoder("default", {"threads": 1}).model_dir == DEFAULT_MODEL


@pytest.mark.parametrize("argv", [["encode"], ["index", "c.trec", "-o", "i"], ["search", "i", "q"], ["eval"],
                                  ["train", "--train", "t.jsonl", "-o", "out"]])
def test_every_command_defaults_to_the_default_model(argv):
    assert build_parser().parse_args(argv).model == DEFAULT_MODEL


def test_explicit_model_arguments_still_parse():
    args = build_parser().parse_args(["index", "m", "c.trec", "-o", "i"])
    assert (args.model, args.corpus) == ("m", "c.trec")
    args = build_parser().parse_args(["search", "m", "i", "q"])
    assert (args.model, args.index, args.queries) == ("m", "i", "q")


def test_eval_without_arguments_is_the_main_job(collection, monkeypatch, capsys):
    pytest.importorskip("bm25s")
    monkeypatch.setattr(cli, "DEMO_COLLECTION", str(collection))
    assert main(["eval", "--quiet", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines()}
    assert {"mambaret (default model)", "BM25 (bm25s)", "fusion (rrf: model + BM25)"} <= set(rows)
    header = next(line for line in out.splitlines() if line.startswith("system"))
    assert header.split()[1:] == ["ndcg@10", "mrr@10", "recall@100", "map"]
    speed = next(line for line in out.splitlines() if line.startswith("encoding speed"))
    assert "3 documents" in speed and "docs/s" in speed and "tokens/s" in speed and "1 threads" in speed


def test_eval_no_model_is_bm25_alone(collection, capsys):
    pytest.importorskip("bm25s")
    assert main(["eval", "--no-model", "--collection", str(collection), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "BM25" in out and "mambaret" not in out and "fusion" not in out and "encoding speed" not in out


def test_eval_and_encode_without_the_demo_collection_say_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "DEMO_COLLECTION", str(tmp_path / "absent"))
    monkeypatch.setattr(cli, "DEMO_CORPUS", str(tmp_path / "absent" / "doc-text.trec"))
    assert main(["eval"]) == 2
    err = capsys.readouterr().err
    assert "usage: mambaret eval" in err and "absent" in err and "Traceback" not in err
    assert main(["encode"]) == 2
    err = capsys.readouterr().err
    assert "usage: mambaret encode" in err and "absent" in err


def test_encode_without_arguments_uses_the_default_model(collection, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "DEMO_CORPUS", str(collection / "doc-text.trec"))
    out_path = tmp_path / "emb.npy"
    assert main(["encode", "--quiet", "--threads", "1", "--normalize", "-o", str(out_path)]) == 0
    assert "default model" in capsys.readouterr().out
    emb = np.load(out_path)
    enc = mr.MambaEncoder.from_pretrained(DEFAULT_MODEL, threads=1)
    texts = ["state space models for retrieval", "cooking pasta with tomatoes", "linear time sequence models"]
    np.testing.assert_allclose(emb, enc.encode_document(texts, normalize_embeddings=True), rtol=0, atol=1e-6)


def test_parity_with_transformers_and_sentence_transformers(encoder, tmp_path):
    """The same embeddings through MambaEncoder, HF transformers' MambaModel (last token of the
    model's own ids, final norm, L2) and SentenceTransformer on the exported folder."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ours = encoder.encode(TEXTS, normalize_embeddings=True)

    hf = transformers.MambaModel.from_pretrained(DEFAULT_MODEL, torch_dtype=torch.float32).eval()
    rows = []
    with torch.no_grad():
        for ids in encoder.tokenize(TEXTS):
            state = hf(torch.tensor([ids], dtype=torch.long)).last_hidden_state[0, -1]
            rows.append(torch.nn.functional.normalize(state, dim=-1).numpy())
    assert np.abs(np.stack(rows) - ours).max() <= 1e-5

    st = pytest.importorskip("sentence_transformers")
    folder = mr.export_sentence_transformers(encoder, str(tmp_path / "st"))
    model = st.SentenceTransformer(folder, device="cpu")
    theirs = model.encode(TEXTS, batch_size=len(TEXTS), convert_to_numpy=True)
    assert np.abs(theirs - ours).max() <= 1e-5


@pytest.mark.parametrize("argv,expected", [
    (["index", "m", "--quiet", "c.trec", "-o", "i"], ("m", "c.trec")),
    (["index", "--quiet", "c.trec", "-o", "i"], (DEFAULT_MODEL, "c.trec")),
    (["search", "m", "-k", "3", "i", "q"], ("m", "i")),
    (["search", "-k", "3", "i", "q"], (DEFAULT_MODEL, "i")),
])
def test_options_may_sit_between_the_positional_arguments(argv, expected):
    args = build_parser().parse_args(argv)
    assert (args.model, getattr(args, "corpus", None) or args.index) == expected
