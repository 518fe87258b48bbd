"""The command line: each command end to end on small inputs, and clean errors with exit codes."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, shared_file
from mambaret.app.cli import main
from mambaret.arch.random_model import write_random_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer_json):
    return write_random_model(str(tmp_path_factory.mktemp("cli-model")), seed=2, hidden_size=16, num_hidden_layers=1,
                              vocab_size=50280, state_size=4, tokenizer_json=str(tokenizer_json))


def test_encode_writes_npy(model_dir, collection, tmp_path, capsys):
    out = tmp_path / "emb.npy"
    ids = tmp_path / "ids.txt"
    assert main(["encode", model_dir, str(collection / "doc-text.trec"), "-o", str(out), "--ids-output", str(ids),
                 "--quiet", "--threads", "1"]) == 0
    emb = np.load(out)
    assert emb.shape == (3, 16) and np.isfinite(emb).all()
    assert ids.read_text().split() == ["d1", "d2", "d3"]
    assert "tokens/s" in capsys.readouterr().out


def test_encode_plain_text_matches_api(model_dir, tmp_path):
    import mambaret as mr

    corpus = tmp_path / "lines.txt"
    corpus.write_text("first text\n\nsecond text\n")
    out = tmp_path / "e.npy"
    assert main(["encode", model_dir, str(corpus), "-o", str(out), "--quiet", "--threads", "1"]) == 0
    # normalised by default since 0.2.0, as `index` does
    expect = mr.MambaEncoder.from_pretrained(model_dir, threads=1).encode(["first text", "second text"],
                                                                          normalize_embeddings=True)
    np.testing.assert_allclose(np.load(out), expect, rtol=1e-6, atol=1e-7)


def test_index_then_search(model_dir, collection, tmp_path, capsys):
    index = tmp_path / "docs.index"
    assert main(["index", model_dir, str(collection / "doc-text.trec"), "-o", str(index), "--quiet"]) == 0
    run = tmp_path / "run.trec"
    assert main(["search", model_dir, str(index), str(collection / "query-text.trec"), "-k", "2", "-o", str(run)]) == 0
    lines = run.read_text().splitlines()
    assert len(lines) == 4 and {line.split()[0] for line in lines} == {"1", "2"}
    assert main(["search", model_dir, str(index), str(collection / "query-text.trec"), "-k", "1"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.count("\t") == 3]
    assert len(printed) == 2


def test_eval_table(model_dir, collection, capsys):
    pytest.importorskip("bm25s")
    assert main(["eval", model_dir, "--collection", str(collection), "--quiet"]) == 0
    out = capsys.readouterr().out
    for column in ("ndcg@10", "mrr@10", "recall@100", "map"):
        assert column in out
    assert "mambaret" in out and "BM25" in out


def test_eval_table_has_the_fusion_row(model_dir, collection, capsys):
    pytest.importorskip("bm25s")
    from mambaret.evaluation.bm25 import bm25_run
    from mambaret.evaluation.datasets import load_trec_run
    import mambaret as mr

    run_path = collection / "model.run"
    assert main(["eval", model_dir, "--collection", str(collection), "--quiet", "--fusion", "zscore",
                 "--run-output", str(run_path)]) == 0
    rows = {line.split("  ")[0].strip(): line.split()[-4:] for line in capsys.readouterr().out.splitlines()[2:]}
    fusion = next(name for name in rows if name.startswith("fusion (zscore"))
    # the row is the fusion of the two runs the other rows score
    from mambaret.search.retrieval import load_collection
    coll = load_collection(str(collection))
    fused = mr.fuse([load_trec_run(str(run_path)), bm25_run(coll.docs, coll.queries, k=1000)], method="zscore")
    expected = mr.evaluate(fused, coll.qrels)
    assert [float(v) for v in rows[fusion]] == pytest.approx([expected[m] for m in expected], abs=1e-4)
    assert main(["eval", model_dir, "--collection", str(collection), "--quiet", "--fusion", "none"]) == 0
    assert "fusion (" not in capsys.readouterr().out


def test_search_hybrid_fuses_dense_and_bm25(model_dir, collection, tmp_path):
    pytest.importorskip("bm25s")
    import mambaret as mr
    from mambaret.evaluation.bm25 import bm25_run
    from mambaret.evaluation.datasets import load_trec_run, load_trec_topics

    docs = collection / "doc-text.trec"
    index = tmp_path / "docs.index"
    assert main(["index", model_dir, str(docs), "-o", str(index), "--quiet"]) == 0
    dense, hybrid = tmp_path / "dense.trec", tmp_path / "hybrid.trec"
    topics = str(collection / "query-text.trec")
    assert main(["search", model_dir, str(index), topics, "-k", "3", "-o", str(dense)]) == 0
    assert main(["search", model_dir, str(index), topics, "-k", "2", "-o", str(hybrid), "--hybrid", str(docs)]) == 0
    queries = load_trec_topics(topics)
    sparse = bm25_run(mr.evaluation.datasets.load_trec_docs(str(docs)), queries, k=100)
    expected = mr.fuse([load_trec_run(str(dense)), sparse], method="rrf", top_k=2)
    got = load_trec_run(str(hybrid))
    assert set(got) == {"1", "2"}
    for qid in got:
        assert got[qid] == pytest.approx(expected[qid])


def test_eval_vaswani_with_bm25(model_dir, capsys):
    """The real collection: the random model scores low, BM25 well; the pipeline is what is tested."""
    pytest.importorskip("bm25s")
    folder = shared_file("vaswani").parent / "vaswani"
    assert main(["eval", model_dir, "--collection", str(folder), "--quiet", "--max-length", "64"]) == 0
    out = capsys.readouterr().out
    bm25_row = next(line for line in out.splitlines() if line.startswith("BM25"))
    ndcg = float(bm25_row.split()[2])
    assert 0.3 < ndcg < 0.7  # BM25 on Vaswani lands near 0.45 nDCG@10


@pytest.mark.parametrize("argv,code,message", [
    (["encode", "/no/such/model", "/no/such/corpus"], 2, "no model directory"),
    (["index", "/no/such/model", "x.trec", "-o", "i"], 2, ""),
    (["eval", "--collection", "/no/such/folder"], 2, "no collection folder"),
    (["search", "m", "/no/such/index", "q"], 2, "no index file"),
])
def test_bad_paths_exit_cleanly(argv, code, message, capsys):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_model_directory(collection, tmp_path, capsys):
    assert main(["encode", str(tmp_path), str(collection / "doc-text.trec")]) == 2
    assert "config.json" in capsys.readouterr().err


def test_malformed_qrels_names_file_and_line(model_dir, collection, capsys):
    (collection / "qrels").write_text("1 0 d1 1\nbroken line\n")
    assert main(["eval", "--collection", str(collection), "--no-bm25", model_dir, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "qrels" in err and "line 2" in err


def test_installed_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "mambaret", "eval", "--help"], capture_output=True, text=True,
                            cwd=str(REPO_ROOT))
    assert result.returncode == 0 and "--collection" in result.stdout
    result = subprocess.run([sys.executable, "-m", "mambaret"], capture_output=True, text=True, cwd=str(REPO_ROOT))
    assert result.returncode == 2


def test_encode_shows_progress_on_a_terminal_unless_quiet(model_dir, collection, monkeypatch, capsys):
    """A small corpus gets a progress bar on a terminal too; only --quiet hides it."""
    import mambaret.encoding.encoder

    monkeypatch.setattr(mambaret.encoding.encoder, "_is_interactive", lambda: True)
    corpus = str(collection / "doc-text.trec")
    assert main(["encode", model_dir, corpus, "--threads", "1"]) == 0
    assert "Encoding corpus" in capsys.readouterr().err
    assert main(["encode", model_dir, corpus, "--threads", "1", "--quiet"]) == 0
    assert "Encoding corpus" not in capsys.readouterr().err


def test_encode_and_index_apply_the_same_document_prompt(model_dir, collection, tmp_path, capsys):
    """`encode` and `index` embed documents alike for a model with prompts."""
    import mambaret as mr
    from mambaret.search.index import FlatIndex

    enc = mr.MambaEncoder.from_pretrained(model_dir, threads=1, prompts={"query": "query: ", "document": "passage: "})
    folder = mr.export_sentence_transformers(enc, str(tmp_path / "st"))
    corpus = str(collection / "doc-text.trec")
    assert main(["encode", folder, corpus, "-o", str(tmp_path / "e.npy"), "--normalize", "--quiet",
                 "--threads", "1"]) == 0
    assert main(["index", folder, corpus, "-o", str(tmp_path / "d.index"), "--quiet", "--threads", "1"]) == 0
    encoded = np.load(tmp_path / "e.npy")
    index = FlatIndex.load(str(tmp_path / "d.index"))
    scores, ids = index.search(encoded, k=1)
    assert list(ids[:, 0]) == ["d1", "d2", "d3"]
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)
    texts = ["state space models for retrieval", "cooking pasta with tomatoes", "linear time sequence models"]
    np.testing.assert_allclose(encoded, enc.encode_document(texts, normalize_embeddings=True), rtol=1e-5, atol=1e-6)
    assert not np.allclose(encoded, enc.encode(texts, normalize_embeddings=True), atol=1e-4)  # the prompt mattered


@pytest.mark.parametrize("name", ["corpus.txt", "corpus.jsonl"])
def test_binary_corpus_names_the_file_and_line(model_dir, tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(b'{"_id": "a", "text": "fine"}\n' + bytes(range(128, 256)) * 4)
    assert main(["encode", model_dir, str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{path}, line 2: not UTF-8 text" in err and "Traceback" not in err
