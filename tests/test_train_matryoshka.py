"""The matryoshka, adaptive-layer and 2d-matryoshka losses: MatryoshkaLoss against
sentence-transformers' on the same model and batch (through the SentenceTransformer wrapper of
test_train_sentence_transformers.py), the layer losses against their formulas written out by hand
over our exits, and the trainer and CLI around them."""
from __future__ import annotations

import json
import math
import random

import numpy as np

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

import torch.nn.functional as F  # noqa: E402
from train_support import synthetic_pairs, write_pairs_jsonl, write_tiny_model  # noqa: E402

from mambaret.train import Trainer, TrainExample, TrainingArguments, load_model, load_tokenizer  # noqa: E402

D, LAYERS, MAX_LENGTH = 16, 3, 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    model_dir = write_tiny_model(str(tmp_path_factory.mktemp("m")), seed=7, hidden_size=D, num_hidden_layers=LAYERS)
    tokenizer, files = load_tokenizer(model_dir)
    data = synthetic_pairs(6, seed=3, negatives=1)
    return model_dir, tokenizer, files, data


def _trainer(setup, tmp_path, model=None, **kwargs):
    model_dir, tokenizer, files, data = setup
    teacher = kwargs.pop("teacher", None)
    args = TrainingArguments(batch_size=len(data), max_length=MAX_LENGTH, show_progress_bar=False, **kwargs)
    return Trainer(model or load_model(model_dir), tokenizer, args, [TrainExample(q, p, n) for q, p, n in data],
                   str(tmp_path / "out"), tokenizer_files=files, teacher=teacher)


def _step(trainer, seed=0):
    """One batch's loss and gradients (the whole data set is the batch)."""
    trainer.model.zero_grad(set_to_none=True)
    random.seed(seed)
    loss = float(trainer.compute_loss(list(range(len(trainer.examples)))))
    return loss, {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def _assert_grads(mine, theirs, tol=1e-4):
    assert mine.keys() == theirs.keys()
    for name, grad in mine.items():
        err = float((theirs[name] - grad).norm() / grad.norm().clamp_min(1e-30))
        assert err < tol, f"{name}: relative L2 difference {err:.2e}"


@pytest.mark.parametrize("weights,per_step", [(None, -1), ([1.0, 0.5, 0.25], 2)])
def test_matryoshka_equals_sentence_transformers(setup, tmp_path, weights, per_step):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    from test_train_sentence_transformers import MambaTransformer

    model_dir, tokenizer, _, data = setup
    dims = [4, 16, 8]  # sentence-transformers sorts them, largest first; so do we
    ours = _trainer(setup, tmp_path, loss="matryoshka", matryoshka_dims=dims, matryoshka_weights=weights,
                    n_dims_per_step=per_step)
    our_loss, our_grads = _step(ours, seed=5)

    backbone = load_model(model_dir)
    model = SentenceTransformer(modules=[MambaTransformer(backbone, tokenizer, MAX_LENGTH),
                                         Pooling(D, pooling_mode="lasttoken"), Normalize()], device="cpu")
    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model, scale=20.0), dims, matryoshka_weights=weights,
                          n_dims_per_step=per_step)
    columns = ([q for q, _, _ in data], [p for _, p, _ in data], [n[0] for _, _, n in data])
    random.seed(5)
    theirs = loss([model.preprocess(col) for col in columns], None)
    theirs.backward()
    assert float(theirs.detach()) == pytest.approx(our_loss, rel=1e-5)
    _assert_grads(our_grads, {n: p.grad for n, p in backbone.named_parameters()})


def test_cached_matryoshka_equals_uncached(setup, tmp_path):
    plain = _trainer(setup, tmp_path, loss="matryoshka", matryoshka_dims=[16, 8, 4])
    cached = _trainer(setup, tmp_path, loss="matryoshka", base_loss="cached-mnrl", mini_batch_size=4,
                      matryoshka_dims=[16, 8, 4])
    a, ga = _step(plain)
    b, gb = _step(cached)
    assert b == pytest.approx(a, rel=1e-5)
    _assert_grads(ga, gb)


def _exit_embeddings(model, tokenizer, texts, k):
    """Exit k by hand: the nn model's packed forward stopped at block k, its last token, normalised."""
    from mambaret.encoding.tokenization import TruncationStats
    from mambaret.nn import last_token_embeddings, offsets_from_lengths

    ids = tokenizer.encode(texts, MAX_LENGTH, TruncationStats())
    offsets = offsets_from_lengths([len(x) for x in ids])
    hidden = model.forward_packed(torch.tensor([t for x in ids for t in x]), offsets, exit_layer=k)
    return F.normalize(last_token_embeddings(hidden, offsets), dim=-1)


def _mnrl(cols, scale=20.0):
    q, p, n = cols
    scores = scale * q @ torch.cat([p, n]).T
    return F.cross_entropy(scores, torch.arange(len(q)))


def _by_hand(model, tokenizer, data, layers, dims_final, dims_by_layer, weighting, T=0.3, dims_all=None,
             weights=None):
    """sentence-transformers' AdaptiveLayerLoss (over MatryoshkaLoss when dims are given) written out."""
    columns = ([q for q, _, _ in data], [p for _, p, _ in data], [n[0] for _, _, n in data])
    at = {k: [_exit_embeddings(model, tokenizer, c, k) for c in columns] for k in list(layers) + [LAYERS]}

    def inner(cols, dims):
        if dims is None:
            return _mnrl(cols)
        total = 0.0
        for dim in dims:
            w = 1.0 if weights is None else weights[dims_all.index(dim)]
            total = total + w * _mnrl([F.normalize(c[:, :dim], dim=-1) for c in cols])
        return total

    loss = inner(at[LAYERS], dims_final)
    final = F.softmax(torch.cat(at[LAYERS]) / T, dim=-1).detach()
    for k in layers:
        weight = {"uniform": 1.0, "log": 1 / (1 + math.log(k)), "linear": 1 / k}[weighting]  # index k - 1
        loss = loss + inner(at[k], dims_by_layer[k]) * weight / len(layers)
        kl = F.kl_div(F.log_softmax(torch.cat(at[k]) / T, dim=-1), final, reduction="batchmean")
        loss = loss + kl * T
    return loss


@pytest.mark.parametrize("weighting", ["uniform", "log"])
def test_adaptive_layer_loss_equals_its_formula_over_our_exits(setup, tmp_path, weighting):
    model_dir, tokenizer, _, data = setup
    model = load_model(model_dir)
    model.add_exit_heads([1])  # exit 1 through its own gain, exit 2 through the final norm's
    with torch.no_grad():
        model.exits["1"].weight.mul_(1.5).add_(0.1)
    reference = load_model(model_dir)
    reference.add_exit_heads([1])
    reference.load_state_dict(model.state_dict())
    ours = _trainer(setup, tmp_path, model=model, loss="adaptive-layer", n_layers_per_step=-1)
    ours.loss_fn.layer_weighting = weighting
    loss, grads = _step(ours)
    assert ours.loss_fn.last_layers == (1, 2)
    ref = _by_hand(reference, tokenizer, data, [1, 2], None, {1: None, 2: None}, weighting)
    ref.backward()
    assert loss == pytest.approx(float(ref.detach()), rel=1e-5)
    _assert_grads(grads, {n: p.grad for n, p in reference.named_parameters() if p.grad is not None})
    assert "exits.1.weight" in grads  # the exit's own head is trained


def test_2d_matryoshka_equals_its_formula_with_sampled_layers_and_dims(setup, tmp_path):
    model_dir, tokenizer, _, data = setup
    dims = [16, 8, 4]
    ours = _trainer(setup, tmp_path, loss="2d-matryoshka", matryoshka_dims=dims)  # 1 layer, 1 dim a step
    for seed in (0, 1, 2):
        loss, grads = _step(ours, seed=seed)
        # the draws in the loss's order: the prior exits, the last layer's dim, then each exit's dim
        random.seed(seed)
        layers = random.sample([1, 2], 1)
        final_dims = [dims[i] for i in sorted(random.sample(range(3), 1))]
        by_layer = {k: [dims[i] for i in sorted(random.sample(range(3), 1))] for k in layers}
        assert ours.loss_fn.last_layers == tuple(layers)
        reference = load_model(model_dir)
        ref = _by_hand(reference, tokenizer, data, layers, final_dims, by_layer, "uniform", dims_all=dims)
        ref.backward()
        assert loss == pytest.approx(float(ref.detach()), rel=1e-5)
        _assert_grads(grads, {n: p.grad for n, p in reference.named_parameters() if p.grad is not None})


def test_matryoshka_over_mse_truncates_the_teacher_with_the_student(setup, tmp_path):
    from mambaret.train import PrecomputedEmbeddings

    model_dir, tokenizer, _, data = setup
    texts = sorted({t for q, p, _ in data for t in (q, p)})
    vectors = F.normalize(torch.randn(len(texts), D, generator=torch.Generator().manual_seed(0)), dim=-1).numpy()
    teacher = PrecomputedEmbeddings(texts, vectors)
    ours = _trainer(setup, tmp_path, loss="matryoshka", base_loss="mse", matryoshka_dims=[16, 4], teacher=teacher)
    loss, _ = _step(ours)
    reference = load_model(model_dir)
    cols = [[q for q, _, _ in data], [p for _, p, _ in data]]
    ref = 0.0
    for dim in (16, 4):
        student = [F.normalize(_exit_embeddings(reference, tokenizer, c, LAYERS)[:, :dim], dim=-1) for c in cols]
        target = [torch.from_numpy(teacher.encode(c, normalize_embeddings=True))[:, :dim] for c in cols]
        ref = ref + sum(F.mse_loss(s, t) for s, t in zip(student, target)) / 2
    assert loss == pytest.approx(float(ref.detach()), rel=1e-5)


def test_bad_loss_arguments_are_value_errors(setup, tmp_path):
    with pytest.raises(ValueError, match="base_loss"):
        _trainer(setup, tmp_path, loss="adaptive-layer", base_loss="cached-mnrl")
    with pytest.raises(ValueError, match="matryoshka_dims"):
        _trainer(setup, tmp_path, loss="matryoshka", matryoshka_dims=[32, 8])
    with pytest.raises(ValueError, match="matryoshka_weights"):
        _trainer(setup, tmp_path, loss="matryoshka", matryoshka_dims=[16, 8], matryoshka_weights=[1.0])
    with pytest.raises(ValueError, match="exit_layers"):
        _trainer(setup, tmp_path, loss="adaptive-layer", exit_layers=[0])
    with pytest.raises(ValueError, match="teacher"):
        _trainer(setup, tmp_path, loss="2d-matryoshka", base_loss="mse")


def test_cli_trains_2d_matryoshka_and_the_model_lists_its_dims_and_exits(setup, tmp_path, capsys):
    import warnings

    import mambaret as mr
    from mambaret.app.cli import main

    model_dir, _, _, data = setup
    pairs = write_pairs_jsonl(str(tmp_path / "pairs.jsonl"), data)
    out = str(tmp_path / "trained")
    assert main(["train", model_dir, "--train", pairs, "--output", out, "--loss", "2d-matryoshka",
                 "--matryoshka-dims", "16", "8", "--exit-layers", "2", "--max-steps", "2", "--batch-size", "3",
                 "--max-length", "16", "--quiet"]) == 0
    with open(f"{out}/config.json") as f:
        config = json.load(f)
    assert config["matryoshka_dims"] == [16, 8] and config["exit_layers"] == [3, 2]
    enc = mr.MambaEncoder.from_pretrained(out, threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert enc.encode(["c1 r2"], truncate_dim=8, exit_layer=2).shape == (1, 8)
    # --exit-heads: exit 2 gets its own gain, trained (away from norm_f's) and read back by the engine
    headed = str(tmp_path / "headed")
    assert main(["train", model_dir, "--train", pairs, "--output", headed, "--loss", "adaptive-layer", "--exit-heads",
                 "--exit-layers", "2", "--max-steps", "2", "--batch-size", "3", "--max-length", "16", "--lr", "1e-2",
                 "--quiet"]) == 0
    from safetensors.numpy import load_file

    weights = load_file(f"{headed}/model.safetensors")
    assert sorted(k for k in weights if k.startswith("exits.")) == ["exits.2.weight"]
    assert not np.allclose(weights["exits.2.weight"], weights["norm_f.weight"])
    from mambaret.nn import MambaModel, last_token_embeddings, offsets_from_lengths

    reloaded = MambaModel.from_pretrained(headed).eval()
    assert torch.equal(reloaded.exits["2"].weight, torch.from_numpy(weights["exits.2.weight"]))
    engine = mr.MambaEncoder.from_pretrained(headed, threads=1)
    ids = engine.tokenize(["c1 r2 c3", "r4 c5"])
    offsets = offsets_from_lengths([len(x) for x in ids])
    with torch.no_grad():
        ref = last_token_embeddings(reloaded.forward_packed(torch.tensor([t for x in ids for t in x]), offsets,
                                                            exit_layer=2), offsets)
    np.testing.assert_allclose(engine.encode(ids, exit_layer=2, normalize_embeddings=True),
                               F.normalize(ref, dim=-1).numpy(), rtol=1e-5, atol=1e-6)
    assert main(["train", model_dir, "--train", pairs, "--output", str(tmp_path / "bad"), "--loss", "matryoshka",
                 "--matryoshka-dims", "99", "--quiet"]) == 2
    assert "matryoshka_dims" in capsys.readouterr().err
