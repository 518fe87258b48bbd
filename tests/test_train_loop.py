"""The training loop: resume equals an uninterrupted run, crash-safe files, data errors, hard-negative
mining, and a small synthetic task that the trained model solves far better than the untrained one,
saved in a folder that MambaEncoder and transformers read with the same embeddings."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from train_support import synthetic_pairs, write_pairs_jsonl, write_tiny_model  # noqa: E402

from mambaret.train import (BiEncoder, Trainer, TrainExample, TrainingArguments, list_checkpoints,  # noqa: E402
                            load_jsonl_pairs, load_model, load_tokenizer, mine_hard_negatives)
from mambaret.train import saving  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    # the CI machine is shared: one thread keeps small steps from waiting on each other
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_model(str(tmp_path_factory.mktemp("train-tiny")), seed=4)


def _examples(n, seed=0, negatives=0):
    return [TrainExample(q, p, list(negs)) for q, p, negs in synthetic_pairs(n, seed=seed, negatives=negatives)]


def _trainer(model_dir, examples, out, teacher=None, **overrides):
    tokenizer, files = load_tokenizer(model_dir)
    args = TrainingArguments(**{"epochs": 2, "batch_size": 4, "lr": 1e-3, "max_length": 16, "seed": 7,
                                "show_progress_bar": False, **overrides})
    return Trainer(load_model(model_dir), tokenizer, args, examples, out, tokenizer_files=files, teacher=teacher,
                   log=lambda m: None)


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("loss", ["mnrl", "cached-mnrl"])
def test_resume_gives_the_same_parameters(tiny_dir, tmp_path, loss):
    examples = _examples(10, negatives=2)  # 3 batches per epoch, the last one short
    full = _trainer(tiny_dir, examples, str(tmp_path / "full"), save_steps=2, mine_negatives=1, loss=loss,
                    mini_batch_size=3, negatives_per_query=2)
    full.train()
    expect = _params(full.model)
    steps = [s for s, _ in list_checkpoints(str(tmp_path / "full"))]
    assert steps == [2, 4]  # none at the last step: the final model is the run's result
    state = saving.read_trainer_state(str(tmp_path / "full" / "checkpoint-4"))
    assert (state["epoch"], state["next_batch"], state["global_step"]) == (1, 1, 4)
    assert len(state["mined"]) == len(examples) and all(isinstance(i, int) for row in state["mined"] for i in row)

    # a fresh process's view: new model from the original weights, resumed mid-epoch
    resumed = _trainer(tiny_dir, examples, str(tmp_path / "full"), save_steps=2, mine_negatives=1, loss=loss,
                       mini_batch_size=3, negatives_per_query=2)
    resumed.train(resume_from=str(tmp_path / "full" / "checkpoint-4"))
    assert resumed.state.global_step == 6
    for name, value in _params(resumed.model).items():
        torch.testing.assert_close(value, expect[name], rtol=0, atol=1e-6, msg=name)
    assert [h["loss"] for h in resumed.state.history] == pytest.approx([h["loss"] for h in full.state.history],
                                                                       rel=1e-5)
    for group_a, group_b in zip(resumed.optimizer.state_dict()["state"].values(),
                                full.optimizer.state_dict()["state"].values()):
        torch.testing.assert_close(group_a["exp_avg"], group_b["exp_avg"], rtol=0, atol=1e-6)


def test_resume_rejects_other_data(tiny_dir, tmp_path):
    t = _trainer(tiny_dir, _examples(8), str(tmp_path / "o"), save_steps=1, epochs=1)
    t.train()
    other = _trainer(tiny_dir, _examples(12), str(tmp_path / "o"), epochs=1)
    with pytest.raises(ValueError, match="training examples"):
        other.train(resume_from=list_checkpoints(str(tmp_path / "o"))[0][1])


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / "state.json")
    saving.atomic_json(path, {"step": 1})

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write('{"step": ')
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        saving.atomic_write(path, broken)
    assert json.load(open(path)) == {"step": 1}
    assert os.listdir(tmp_path) == ["state.json"]  # no temporary file left behind


def test_incomplete_checkpoint_is_ignored(tmp_path):
    (tmp_path / "checkpoint-5").mkdir()  # a crash before trainer_state.json was written
    (tmp_path / ".checkpoint-9.abc.tmp").mkdir()
    assert list_checkpoints(str(tmp_path)) == []


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    for body, why in [('{"query": "a", "positive": "b"}\n{"query": "c"}\n', "line 2: no 'positive'"),
                      ('{"query": "a", "positive": "b"}\n\n{bad json\n', "line 3: invalid JSON"),
                      ('{"positive": "b"}\n', "line 1: no 'query'"),
                      ('{"query": "a", "positive": "b", "negatives": "c"}\n', "line 1: 'negatives' must be a list"),
                      ('["a", "b"]\n', "line 1: expected a JSON object")]:
        path.write_text(body)
        with pytest.raises(ValueError, match=str(path).replace(".", r"\.") + ", " + why.replace("(", r"\(")):
            load_jsonl_pairs(str(path))
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="holds no training pairs"):
        load_jsonl_pairs(str(path))
    path.write_text('{"query": "q", "positive": "p", "negatives": ["n1", "n2"], "scores": [3, 1, 0.5]}\n')
    (ex,) = load_jsonl_pairs(str(path))
    assert (ex.query, ex.positive, ex.negatives, ex.scores) == ("q", "p", ["n1", "n2"], [3.0, 1.0, 0.5])


def test_mining_skips_the_positive_and_ranks_by_score():
    vectors = {"q1": [1, 0, 0], "p1": [1, 0.1, 0], "near": [0.9, 0.4, 0], "far": [0, 0, 1], "mid": [0.5, 0.5, 0.5]}

    def embed(texts):
        v = np.array([vectors[t] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    examples = [TrainExample("q1", "p1", ["far"])]
    assert mine_hard_negatives(embed, examples, ["p1", "near", "far", "mid"], 2) == [["near", "mid"]]
    assert mine_hard_negatives(embed, examples, ["p1", "near", "far", "mid"], 1, skip=1) == [["mid"]]
    assert mine_hard_negatives(embed, examples, None, 3) == [["far"]]  # the pool: the training texts


def test_synthetic_task_is_learned_and_saved_for_every_reader(tmp_path):
    """Queries and positives share two rare words among common filler: the trained model must
    at least double the held-out MRR of the untrained one; its saved folder gives the same
    embeddings in MambaEncoder and transformers."""
    model_dir = write_tiny_model(str(tmp_path / "model"), seed=0, hidden_size=32, state_size=8)
    pairs = synthetic_pairs(600, seed=0)
    train = [TrainExample(q, p) for q, p, _ in pairs[:500]]
    held_out = pairs[500:]
    trainer = _trainer(model_dir, train, str(tmp_path / "out"), epochs=3, batch_size=32, lr=1e-2,
                       weight_decay=0.0, max_length=64, seed=0)

    def held_out_mrr():
        q = trainer.biencoder.encode([h[0] for h in held_out])
        p = trainer.biencoder.encode([h[1] for h in held_out])
        scores = q @ p.T
        ranks = (scores > scores.diagonal()[:, None]).sum(1) + 1
        return float((1.0 / ranks).mean())

    before = held_out_mrr()
    state = trainer.train()
    after = held_out_mrr()
    losses = [h["loss"] for h in state.history]
    assert np.mean(losses[-8:]) < 0.6 * np.mean(losses[:8]), losses
    assert after >= 2 * before, (before, after)

    out = trainer.save_model(str(tmp_path / "out"))
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(out))
    texts = [h[0] for h in held_out[:6]] + [h[1] for h in held_out[:6]]
    ours = trainer.biencoder.encode(texts)

    import mambaret as mr

    engine = mr.MambaEncoder.from_pretrained(out, threads=1).encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(engine, ours, atol=1e-5, rtol=0)

    transformers = pytest.importorskip("transformers")
    hf = transformers.MambaModel.from_pretrained(out).eval()
    ids = trainer.biencoder.token_ids(texts)
    with torch.no_grad():
        hf_emb = np.stack([hf(torch.tensor([x])).last_hidden_state[0, -1].numpy() for x in ids])
    hf_emb /= np.linalg.norm(hf_emb, axis=1, keepdims=True)
    np.testing.assert_allclose(hf_emb, ours, atol=1e-5, rtol=0)


def test_biencoder_matches_the_engine_with_truncation(tiny_dir):
    """Embeddings in training are the encoder's: EOS appended, ids[:max_length-1] + [eos]."""
    import mambaret as mr

    tokenizer, _ = load_tokenizer(tiny_dir)
    enc = BiEncoder(load_model(tiny_dir), tokenizer, max_length=4)
    texts = ["c1 c2 c3 c4 c5 c6 r1", "r2", "c9 r3 c8"]
    engine = mr.MambaEncoder.from_pretrained(tiny_dir, max_length=4, threads=1)
    with pytest.warns(UserWarning, match="truncated"):
        expect = engine.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(enc.encode(texts), expect, atol=1e-5, rtol=0)
    assert enc.truncation.truncated == 1


def test_distillation_losses_train(tiny_dir, tmp_path):
    """mse to a teacher's embeddings, and kl to teacher scores from the data, both lower their loss."""
    import mambaret as mr

    teacher_dir = write_tiny_model(str(tmp_path / "teacher"), seed=9)
    teacher = mr.MambaEncoder.from_pretrained(teacher_dir, threads=1)
    examples = _examples(16)
    t = _trainer(tiny_dir, examples, str(tmp_path / "mse"), teacher, loss="mse", epochs=6, batch_size=8, lr=5e-3)
    t.train()
    losses = [h["loss"] for h in t.state.history]
    assert losses[-1] < losses[0]

    scored = [TrainExample(e.query, e.positive, ["c1 c2 r3", "c4 r5"], [5.0, 1.0, 0.0]) for e in examples]
    t = _trainer(tiny_dir, scored, str(tmp_path / "kl"), loss="kl", temperature=0.1, epochs=6, batch_size=8, lr=5e-3)
    t.train()
    losses = [h["loss"] for h in t.state.history]
    assert losses[-1] < losses[0]
    negatives = [TrainExample(e.query, e.positive, ["c1 c2 r3", "c4 r5"]) for e in examples]
    t = _trainer(tiny_dir, negatives, str(tmp_path / "kl-teacher"), teacher, loss="kl", temperature=0.1, epochs=6,
                 batch_size=8, lr=5e-3)  # scores from the teacher's embeddings
    t.train()
    losses = [h["loss"] for h in t.state.history]
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="teacher"):
        _trainer(tiny_dir, examples, str(tmp_path / "x"), loss="mse")
    with pytest.raises(ValueError, match="negatives on every line"):
        _trainer(tiny_dir, examples, str(tmp_path / "x"), loss="kl")


def test_prune_keeps_the_newest_checkpoints(tmp_path):
    for step in (3, 10, 7):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / saving.TRAINER_STATE).write_text("{}")
    saving.prune_checkpoints(str(tmp_path), 2)
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [7, 10]


def test_beir_pairs_take_relevant_judgements_only(tmp_path):
    from mambaret.train import load_training_data

    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "one"}\n'
                                           '{"_id": "d2", "text": "two"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "first"}\n{"_id": "q2", "text": "second"}\n')
    (tmp_path / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td2\t2\n")
    examples, corpus = load_training_data(str(tmp_path))
    assert [(e.query, e.positive) for e in examples] == [("first", "T one"), ("second", "two")]
    assert corpus == ["T one", "two"]


def test_failed_checkpoint_leaves_the_previous_one(tiny_dir, tmp_path, monkeypatch):
    t = _trainer(tiny_dir, _examples(8), str(tmp_path / "o"), save_steps=1, epochs=1)
    t.train()  # checkpoint-1 (the last step writes none)
    before = sorted(os.listdir(tmp_path / "o"))

    def disk_full(path, obj):
        raise OSError("no space left on device")

    monkeypatch.setattr(saving, "atomic_torch_save", disk_full)
    t.state.global_step = 5
    with pytest.raises(OSError):
        t.save_checkpoint()
    assert sorted(os.listdir(tmp_path / "o")) == before == ["checkpoint-1"]
