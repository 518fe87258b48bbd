"""What a new user meets first (issue 28): each numbered report as a test, the commands and
library calls that tracebacked, failed or did something silently wrong."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings

import numpy as np
import pytest

from conftest import REPO_ROOT
from mambaret.app import cli
from mambaret.app.cli import main

DEFAULT_DIM = 384


@pytest.fixture
def no_bm25s(monkeypatch):
    """bm25s as if not installed, and a model load that would show the command did work first."""
    monkeypatch.setitem(sys.modules, "bm25s", None)  # `import bm25s` then raises ImportError

    def loading_is_work(*args, **kwargs):
        raise AssertionError("the model was loaded before the missing package was reported")

    monkeypatch.setattr(cli, "_load_encoder", loading_is_work)


def _one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mambaret {command}:") and "\n" not in err and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- 1. BM25 in the main job

def test_bm25s_is_in_the_base_install():
    import re

    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    base = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)  # [project] dependencies
    assert re.search(r'^\s*"bm25s\b', base, re.M), base


def test_eval_without_bm25s_says_so_before_encoding(no_bm25s, collection, capsys):
    assert main(["eval", "--collection", str(collection), "--quiet"]) == 2
    err = _one_line_error(capsys, "eval")
    assert "bm25s" in err and "pip install" in err and ".[bm25]" in err


def test_search_hybrid_without_bm25s_says_so_before_encoding(no_bm25s, collection, tmp_path, capsys):
    index = tmp_path / "docs.index"
    index.write_bytes(b"")  # never opened: the check comes first
    assert main(["search", str(index), str(collection / "query-text.trec"),
                 "--hybrid", str(collection / "doc-text.trec")]) == 2
    assert "bm25s" in _one_line_error(capsys, "search")


def test_eval_no_bm25_needs_no_bm25s(monkeypatch, collection, capsys):
    monkeypatch.setitem(sys.modules, "bm25s", None)
    assert main(["eval", "--collection", str(collection), "--no-bm25", "--quiet", "--threads", "1"]) == 0
    assert "mambaret (default model)" in capsys.readouterr().out


def test_hybrid_retriever_without_bm25s_fails_before_encoding(monkeypatch):
    from mambaret.integrations import langchain

    if not langchain.LANGCHAIN_AVAILABLE:
        pytest.skip("langchain-core is not installed")
    monkeypatch.setitem(sys.modules, "bm25s", None)
    monkeypatch.setattr(langchain, "load_encoder", lambda *a, **k: pytest.fail("encoded before the check"))
    with pytest.raises(ImportError, match="pip install bm25s"):
        langchain.MambaHybridRetriever.from_texts(["a text"], "default")


# ---------------------------------------------------------------- 2. sentence-transformers folders

TEXTS = ["what is a state space model?", "how do I list a directory", "Élan vital, café au lait",
         "word " * 600 + "end"]


def _sentence_transformer(folder):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SentenceTransformer(str(folder), device="cpu")


def _module_kinds(model) -> list[str]:
    return [type(module).__name__ for module in model]


def test_sentence_transformers_loads_the_packaged_model_as_mambaret_embeds():
    import mambaret as mr

    model = _sentence_transformer(mr.DEFAULT_MODEL)
    assert _module_kinds(model) == ["Transformer", "Pooling", "Normalize"]
    assert model[1].get_config_dict()["pooling_mode"] == "lasttoken"
    encoder = mr.MambaEncoder.from_pretrained("default", threads=1)
    assert model.max_seq_length == encoder.max_length == 512
    theirs = model.encode(TEXTS, convert_to_numpy=True)
    with pytest.warns(UserWarning, match="1 of 4 inputs were longer than max_length=512"):
        ours = encoder.encode(TEXTS)  # both cut the long one to 511 pieces + EOS
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)


def test_sentence_transformers_loads_a_trained_model_as_mambaret_embeds(trained):
    import mambaret as mr

    out = trained["output"]
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                 os.path.join("1_Pooling", "config.json"), os.path.join("2_Normalize", "config.json")):
        assert os.path.isfile(os.path.join(out, name)), name
    model = _sentence_transformer(out)
    assert _module_kinds(model) == ["Transformer", "Pooling", "Normalize"]
    texts = ["c1 r2 c3", "r4 c5", "c7"]
    encoder = mr.MambaEncoder.from_pretrained(out, threads=1)
    assert encoder.normalize and encoder.max_length == 16  # the training --max-length
    np.testing.assert_allclose(model.encode(texts, convert_to_numpy=True), encoder.encode(texts), atol=1e-5)
    # a checkpoint folder is a model folder too
    checkpoint = os.path.join(out, "checkpoint-2")
    np.testing.assert_allclose(_sentence_transformer(checkpoint).encode(texts, convert_to_numpy=True),
                               mr.MambaEncoder.from_pretrained(checkpoint, threads=1).encode(texts), atol=1e-5)


# ---------------------------------------------------------------- 3. encode CORPUS

def test_encode_takes_a_lone_corpus_file_with_the_default_model(collection, tmp_path, capsys):
    out = tmp_path / "emb.npy"
    assert main(["encode", str(collection / "doc-text.trec"), "-o", str(out), "--quiet", "--threads", "1"]) == 0
    assert np.load(out).shape == (3, DEFAULT_DIM)
    assert main(["encode", str(collection / "doc-text.trec"), "--limit", "1", "--quiet", "--threads", "1"]) == 0
    assert "encoded 1 documents" in capsys.readouterr().out
    assert main(["encode", str(collection / "missing.trec"), "--quiet"]) == 2  # a typo names the corpus
    assert "no corpus file" in _one_line_error(capsys, "encode")


# ---------------------------------------------------------------- 4, 6, 10: train

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small `mambaret train` run with checkpoints (shared: training is the slow part)."""
    pytest.importorskip("torch")
    from train_support import synthetic_pairs, write_pairs_jsonl, write_tiny_model

    root = tmp_path_factory.mktemp("first-use-train")
    model_dir = write_tiny_model(str(root / "model"), seed=7)
    pairs = write_pairs_jsonl(str(root / "pairs.jsonl"), synthetic_pairs(12, seed=2, negatives=1))
    out = str(root / "out")
    argv = ["train", model_dir, "--train", pairs, "--output", out, "--epochs", "2", "--batch-size", "4",
            "--lr", "1e-3", "--max-length", "16", "--save-steps", "2", "--threads", "1", "--quiet"]
    old_mask = os.umask(0o022)
    try:
        assert main(argv) == 0
    finally:
        os.umask(old_mask)
    return {"model": model_dir, "pairs": pairs, "output": out, "argv": argv}


def test_train_resume_in_the_readme_form_after_an_interruption(trained, tmp_path, capsys):
    import shutil

    # an interrupted run: checkpoints, no final model at the root yet
    out = str(tmp_path / "out")
    shutil.copytree(trained["output"], out)
    for name in os.listdir(out):
        if not name.startswith("checkpoint-"):
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    argv = ["train", out, "--train", trained["pairs"], "--output", out, "--resume", "--epochs", "2",
            "--batch-size", "4", "--lr", "1e-3", "--max-length", "16", "--save-steps", "2", "--threads", "1",
            "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "trained 6 steps" in capsys.readouterr().out
    assert os.path.isfile(os.path.join(out, "model.safetensors"))


def test_train_refuses_mnrl_with_nothing_to_contrast(tmp_path, capsys):
    pytest.importorskip("torch")
    from train_support import synthetic_pairs, write_pairs_jsonl, write_tiny_model

    model_dir = write_tiny_model(str(tmp_path / "model"), seed=3)
    pairs = write_pairs_jsonl(str(tmp_path / "pairs.jsonl"), synthetic_pairs(4, seed=1))
    out = str(tmp_path / "out")
    assert main(["train", model_dir, "--train", pairs, "--output", out, "--batch-size", "1", "--quiet"]) == 2
    assert "nothing to contrast" in _one_line_error(capsys, "train")
    assert not os.path.exists(out)


def test_trained_model_files_are_readable_by_others(trained):
    out = trained["output"]
    assert stat.S_IMODE(os.stat(os.path.join(out, "model.safetensors")).st_mode) == 0o644
    for root, folders, files in os.walk(out):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o755, root
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode) == 0o644, os.path.join(root, name)


def test_exported_weights_are_readable_by_others(tmp_path):
    import mambaret as mr

    old_mask = os.umask(0o022)
    try:
        folder = mr.export_sentence_transformers(mr.MambaEncoder.from_pretrained("default"), tmp_path / "st")
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE(os.stat(os.path.join(folder, "model.safetensors")).st_mode) == 0o644


# ---------------------------------------------------------------- 5. --limit

@pytest.mark.parametrize("limit", ["-3", "0"])
def test_encode_refuses_a_limit_below_one(collection, limit, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["encode", str(collection / "doc-text.trec"), "--limit", limit, "--quiet"])
    assert exited.value.code == 2
    assert "--limit" in capsys.readouterr().err


# ---------------------------------------------------------------- 7. DLPack token ids

def test_a_1d_torch_tensor_of_token_ids_is_one_input():
    torch = pytest.importorskip("torch")
    import mambaret as mr

    encoder = mr.MambaEncoder.from_pretrained("default", threads=1)
    ids = [167, 116, 43, 3]
    got = encoder.encode(torch.tensor(ids))
    assert got.shape == (DEFAULT_DIM,)
    np.testing.assert_array_equal(got, encoder.encode(np.array(ids)))
    rows = encoder.encode(torch.tensor([ids, ids], dtype=torch.int32))
    np.testing.assert_array_equal(rows, np.stack([got, got]))


# ---------------------------------------------------------------- 8. LangChain

def _langchain():
    from mambaret.integrations import langchain

    if not langchain.LANGCHAIN_AVAILABLE:
        pytest.skip("langchain-core is not installed")
    return langchain


def test_hybrid_retriever_over_stopword_only_texts_is_quiet():
    langchain = _langchain()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bm25s's RuntimeWarning included
        retriever = langchain.MambaHybridRetriever.from_texts(["the", "a of", "and the"], "default", k=2)
        found = retriever.invoke("the of")
    assert len(found) == 2  # the dense ranking alone


def test_hybrid_retriever_k_errors_name_k_and_repr_is_short():
    langchain = _langchain()
    with pytest.raises(ValueError, match="^k must be a positive integer"):
        langchain.MambaHybridRetriever.from_texts(["a text"], "default", k=0)
    retriever = langchain.MambaHybridRetriever.from_texts([f"document number {i}" for i in range(300)], "default")
    text = repr(retriever)
    assert len(text) < 500 and "<300 documents>" in text and "document number 7" not in text
    assert len(str(retriever)) < 500


def test_langchain_embeddings_default_to_the_packaged_model():
    from mambaret.integrations.langchain import MambaEmbeddings

    vector = MambaEmbeddings().embed_query("a question")
    assert len(vector) == DEFAULT_DIM


# ---------------------------------------------------------------- 9. messages

def test_a_lone_surrogate_is_named_with_its_input():
    import mambaret as mr

    encoder = mr.MambaEncoder.from_pretrained("default", threads=1)
    with pytest.raises(ValueError, match=r"input 1 is not valid Unicode: a lone surrogate"):
        encoder.encode(["fine", "bad \udc80 bytes"])


def test_train_on_a_binary_file_names_the_file(tmp_path, capsys):
    pytest.importorskip("torch")
    binary = tmp_path / "pairs.bin"
    binary.write_bytes(b"\x00\xff\xfe\x80" * 64)
    assert main(["train", "--train", str(binary), "--output", str(tmp_path / "out"), "--quiet"]) == 2
    err = _one_line_error(capsys, "train")
    assert str(binary) in err and "UTF-8" in err


def test_loading_an_index_of_another_kind_names_the_kind(tmp_path):
    import mambaret as mr

    path = tmp_path / "flat.index"
    index = mr.FlatIndex(8)
    index.add(np.eye(8, dtype=np.float32))
    index.save(path)
    with pytest.raises(ValueError, match="is a file of FlatIndex, not of BinaryFlatIndex: load it with "
                                         "mambaret.FlatIndex.load"):
        mr.BinaryFlatIndex.load(path)


# ---------------------------------------------------------------- 11. consistency

def test_encode_of_an_empty_corpus_is_an_error_like_index(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert main(["encode", str(empty), "--quiet"]) == 2
    assert "holds no documents" in _one_line_error(capsys, "encode")
    assert main(["index", str(empty), "-o", str(tmp_path / "x.index"), "--quiet"]) == 2
    assert "holds no documents" in _one_line_error(capsys, "index")


def test_search_with_empty_topics_is_an_error(collection, tmp_path, capsys):
    index = tmp_path / "docs.index"
    assert main(["index", str(collection / "doc-text.trec"), "-o", str(index), "--quiet", "--threads", "1"]) == 0
    empty = tmp_path / "topics.tsv"
    empty.write_text("")
    capsys.readouterr()
    assert main(["search", str(index), str(empty)]) == 2
    assert "holds no queries" in _one_line_error(capsys, "search")


def test_export_refuses_a_folder_that_holds_files(tmp_path):
    import mambaret as mr

    folder = tmp_path / "st"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    encoder = mr.MambaEncoder.from_pretrained("default")
    with pytest.raises(FileExistsError, match="not empty"):
        mr.export_sentence_transformers(encoder, folder)
    assert os.listdir(folder) == ["notes.txt"]
    mr.export_sentence_transformers(encoder, folder, overwrite=True)
    assert os.path.isfile(folder / "modules.json")


def test_a_closed_pipe_ends_a_command_quietly(collection):
    """`mambaret search ... | head`: the reader has gone; no 'Broken pipe' failure message."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "mambaret", "eval", "--no-model", "--collection", str(collection)],
            stdout=write_end, stderr=subprocess.PIPE, cwd=REPO_ROOT, text=True, timeout=120,
            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        os.close(write_end)
    assert result.stderr == "", result.stderr
    assert result.returncode == cli.EXIT_BROKEN_PIPE


def test_train_draws_no_progress_bar_into_a_log(trained, tmp_path, capsys):
    argv = [a for a in trained["argv"] if a != "--quiet"]
    argv[argv.index("--output") + 1] = str(tmp_path / "out")
    capsys.readouterr()
    assert main(argv) == 0  # stderr is captured here: not a terminal
    assert "Training" not in capsys.readouterr().err


# ---------------------------------------------------------------- surprises

def test_mostly_unknown_text_is_warned_about_once():
    import mambaret as mr

    encoder = mr.MambaEncoder.from_pretrained("default", threads=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder.encode(["an English sentence", "日本語のテキスト"])
        encoder.encode(["もう一つ"])
    unknown = [w for w in caught if "unknown to this model's vocabulary" in str(w.message)]
    assert len(unknown) == 1 and "input 1" in str(unknown[0].message)
    assert unknown[0].filename == __file__  # points at the caller's line


def test_encode_output_is_normalised_like_index(tmp_path):
    """One default for `encode -o` and `index`: normalised, for a plain HF folder too."""
    from mambaret.arch.random_model import write_random_model
    from train_support import write_word_tokenizer, COMMON

    folder = tmp_path / "model"
    folder.mkdir()
    vocab = write_word_tokenizer(str(folder / "tokenizer.json"), COMMON)
    write_random_model(str(folder), seed=1, hidden_size=16, num_hidden_layers=1, vocab_size=vocab, state_size=4)
    corpus = tmp_path / "lines.txt"
    corpus.write_text("c1 c2\nc3\n")
    out = tmp_path / "e.npy"
    assert main(["encode", str(folder), str(corpus), "-o", str(out), "--quiet", "--threads", "1"]) == 0
    np.testing.assert_allclose(np.linalg.norm(np.load(out), axis=1), 1.0, rtol=1e-5)
    assert main(["encode", str(folder), str(corpus), "-o", str(out), "--quiet", "--no-normalize"]) == 0
    assert not np.allclose(np.linalg.norm(np.load(out), axis=1), 1.0)


def test_build_index_reads_a_folder_of_npy_files(tmp_path):
    import mambaret as mr

    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((n, 8)).astype(np.float32) for n in (50, 30)]
    for i, part in enumerate(parts):
        np.save(tmp_path / f"part-{i:05d}.npy", part)
    built = mr.build_index(str(tmp_path), "flat")
    assert built.index.ntotal == 80
    scores, ids = built.index.search(parts[1][:1], k=1)
    assert ids[0][0] == 50  # rows in file-name order


def test_encoder_similarity_is_the_cosine():
    import mambaret as mr

    encoder = mr.MambaEncoder.from_pretrained("default", threads=1)
    a = encoder.encode(["a state space model", "pasta"])
    b = encoder.encode(["sequence models"])
    np.testing.assert_allclose(encoder.similarity(a, b), mr.similarity(a, b))
    assert encoder.similarity(a, b).shape == (2, 1)


def test_the_main_job_reports_both_fusions(collection, capsys):
    assert main(["eval", "--collection", str(collection), "--quiet", "--threads", "1"]) == 0
    names = [line.split("  ")[0] for line in capsys.readouterr().out.splitlines()]
    assert "fusion (rrf: model + BM25)" in names and "fusion (zscore: model + BM25)" in names


def test_bm25_shows_progress_on_a_terminal_unless_quiet(collection, monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["eval", "--no-model", "--collection", str(collection)]) == 0
    assert "it/s" in capsys.readouterr().err  # bm25s's bars
    assert main(["eval", "--no-model", "--collection", str(collection), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_encode_on_ray_prints_no_info_lines(tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    corpus = tmp_path / "lines.txt"
    corpus.write_text("state space models\ncooking pasta\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_BACKEND_LOG_LEVEL", None)
    done = subprocess.run([sys.executable, "-m", "mambaret", "encode", str(corpus), "--ray", "--num-actors", "1",
                           "--threads", "1", "-o", str(tmp_path / "shards")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "encoded 2 documents on Ray" in done.stdout
    noisy = [line for line in done.stderr.splitlines() if " INFO " in line or "core_worker" in line
             or "authentication" in line or "logging_progress" in line]
    assert not noisy, done.stderr
