"""`mambaret train`: a small run end to end, and every input error as one line, exit code 2 and
no output folder."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("torch")

from train_support import synthetic_pairs, write_pairs_jsonl, write_tiny_model  # noqa: E402

from mambaret.app.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(str(tmp_path_factory.mktemp("cli-train-model")), seed=5)


@pytest.fixture
def pairs(tmp_path):
    return write_pairs_jsonl(str(tmp_path / "pairs.jsonl"), synthetic_pairs(12, seed=1, negatives=1))


def _fails(argv, capsys, message, output):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mambaret train:") and "\n" not in err and "Traceback" not in err, err
    assert message in err, err
    assert not os.path.exists(output), "a failed run must leave no output folder"


def test_train_writes_a_model_that_loads(model_dir, pairs, tmp_path, capsys):
    import mambaret as mr

    out = str(tmp_path / "out")
    argv = ["train", model_dir, "--train", pairs, "--output", out, "--epochs", "2", "--batch-size", "4",
            "--lr", "1e-3", "--max-length", "16", "--save-steps", "2", "--threads", "1", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "trained 6 steps" in printed and "tokens/s" in printed and "final loss" in printed
    names = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "tokenizer.json", "training_args.json",
            "checkpoint-2", "checkpoint-4"} <= names
    assert not [n for n in names if n.startswith(".")], names  # no staging leftovers
    with open(os.path.join(out, "training_args.json")) as f:
        assert json.load(f)["loss"] == "mnrl"
    enc = mr.MambaEncoder.from_pretrained(out, threads=1)
    before = mr.MambaEncoder.from_pretrained(model_dir, threads=1)
    texts = ["c1 r2 c3", "r4 c5"]
    assert not np.allclose(enc.encode(texts), before.encode(texts))

    # an existing run is not overwritten; --resume continues from its latest checkpoint
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    assert "trained 6 steps" in capsys.readouterr().out


def test_train_with_dev_collection_reports_ndcg(model_dir, pairs, tmp_path, capsys):
    dev = tmp_path / "dev"
    (dev / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "text": p} for i, (_, p, _) in enumerate(synthetic_pairs(6, seed=3))]
    queries = [{"_id": f"q{i}", "text": q} for i, (q, _, _) in enumerate(synthetic_pairs(6, seed=3))]
    (dev / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (dev / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (dev / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                            "".join(f"q{i}\td{i}\t1\n" for i in range(6)))
    out = str(tmp_path / "out")
    assert main(["train", model_dir, "--train", pairs, "--output", out, "--dev", str(dev), "--batch-size", "6",
                 "--eval-steps", "1", "--max-length", "16", "--threads", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("dev nDCG@10") >= 3  # each step and the summary


def test_train_on_beir_folder_with_mined_negatives(model_dir, tmp_path, capsys):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    data = synthetic_pairs(8, seed=4)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": p}) + "\n"
                                                 for i, (_, p, _) in enumerate(data)))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": q}) + "\n"
                                                  for i, (q, _, _) in enumerate(data)))
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                                "".join(f"q{i}\td{i}\t1\n" for i in range(8)))
    out = str(tmp_path / "out")
    assert main(["train", model_dir, "--train", str(folder), "--output", out, "--batch-size", "4",
                 "--mine-negatives", "2", "--max-length", "16", "--threads", "1", "--quiet"]) == 0
    assert "trained 2 steps (8 pairs" in capsys.readouterr().out


def test_bad_jsonl_names_file_and_line(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "c1", "positive": "c2"}\n{"query": "c3", "positive": \n')
    out = str(tmp_path / "out")
    _fails(["train", model_dir, "--train", str(bad), "--output", out], capsys, f"{bad}, line 2: invalid JSON", out)


def test_line_without_positive(model_dir, tmp_path, capsys):
    bad = tmp_path / "nopos.jsonl"
    bad.write_text('{"query": "c1", "positive": "c2"}\n{"query": "c3", "negatives": ["c4"]}\n')
    out = str(tmp_path / "out")
    _fails(["train", model_dir, "--train", str(bad), "--output", out], capsys, f"{bad}, line 2: no 'positive'", out)


def test_missing_and_empty_train_file(model_dir, tmp_path, capsys):
    out = str(tmp_path / "out")
    _fails(["train", model_dir, "--train", str(tmp_path / "none.jsonl"), "--output", out], capsys,
           "no training file", out)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    _fails(["train", model_dir, "--train", str(empty), "--output", out], capsys, "holds no training pairs", out)


def test_missing_model_and_tokenizer(model_dir, pairs, tmp_path, capsys):
    out = str(tmp_path / "out")
    _fails(["train", str(tmp_path / "no-model"), "--train", pairs, "--output", out], capsys,
           "no model directory", out)
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        os.link(os.path.join(model_dir, name), bare / name)
    _fails(["train", str(bare), "--train", pairs, "--output", out], capsys, "no tokenizer.json", out)


def test_bad_arguments(model_dir, pairs, tmp_path, capsys):
    out = str(tmp_path / "out")
    _fails(["train", model_dir, "--train", pairs, "--output", out, "--batch-size", "0"], capsys, "batch_size", out)
    _fails(["train", model_dir, "--train", pairs, "--output", out, "--loss", "mse"], capsys, "teacher", out)
    _fails(["train", model_dir, "--train", pairs, "--output", out, "--resume"], capsys, "no complete checkpoint", out)
    (tmp_path / "file").write_text("x")
    assert main(["train", model_dir, "--train", pairs, "--output", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_import_and_cli_parser_never_import_torch():
    import subprocess
    import sys

    from conftest import REPO_ROOT

    code = ("import sys, mambaret, mambaret.app.cli; mambaret.app.cli.build_parser().parse_args(['train', 'm', '--train', 'x', "
            "'--output', 'o']); assert 'torch' not in sys.modules, 'torch was imported'")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(REPO_ROOT))
    assert proc.returncode == 0, proc.stderr
