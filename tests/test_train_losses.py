"""The training losses against direct computations (and sentence-transformers' own), the cached
InfoNCE against the uncached one, and the optimizer's groups and schedule."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from mambaret.train import (CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss,  # noqa: E402
                            kl_distillation_loss, linear_schedule, make_optimizer, mse_distillation_loss,
                            multiple_negatives_ranking_loss, no_weight_decay, parameter_groups, warmup_steps)
from mambaret.train.losses import same_text_as_positive  # noqa: E402


def _unit(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def test_mnrl_equals_explicit_infonce():
    q, p, n = _unit(5, 8, seed=0), _unit(5, 8, seed=1), _unit(10, 8, seed=2)
    candidates = torch.cat([p, n])
    expect = 0.0
    for i in range(5):
        logits = [20.0 * float(F.cosine_similarity(q[i], c, dim=0)) for c in candidates]
        expect += -logits[i] + math.log(sum(math.exp(v) for v in logits))
    got = multiple_negatives_ranking_loss(q, p, n, scale=20.0)
    assert float(got) == pytest.approx(expect / 5, rel=1e-12)
    # without negatives only the in-batch positives compete
    logits = 7.0 * q @ p.T
    assert float(multiple_negatives_ranking_loss(q, p, None, 7.0)) == pytest.approx(
        float((torch.logsumexp(logits, 1) - logits.diagonal()).mean()), rel=1e-12)


def test_mnrl_matches_sentence_transformers():
    st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    q, p, n1, n2 = (_unit(6, 8, seed=s).float() for s in range(4))
    st = st_losses.MultipleNegativesRankingLoss(model=None, scale=20.0)
    ours = multiple_negatives_ranking_loss(q, p, torch.cat([n1, n2]), 20.0)
    assert float(ours) == pytest.approx(float(st.compute_loss_from_embeddings([q, p, n1, n2], None)), rel=1e-6)


def test_same_text_as_positive_marks_false_negatives_only():
    positives = ["doc a", "doc b", "doc a", "doc c"]
    negatives = ["doc b", "doc d", "doc a"]
    mask = same_text_as_positive(positives, negatives)
    expect = torch.zeros(4, 7, dtype=torch.bool)
    for i, j in [(0, 2), (0, 6), (1, 4), (2, 0), (2, 6)]:
        expect[i, j] = True
    assert torch.equal(mask, expect)
    assert same_text_as_positive(["x", "y"], ["z"]) is None


def test_mnrl_leaves_out_a_repeated_positive():
    """Two queries of one batch judged on the same document: neither sees it as a negative, so
    the loss equals InfoNCE computed per query over the other candidates only."""
    q, p, n = _unit(4, 8, seed=0), _unit(4, 8, seed=1), _unit(3, 8, seed=2)
    p = torch.cat([p[:3], p[1:2]])            # query 3's positive is query 1's document
    n = torch.cat([n[:2], p[0:1]])            # a mined negative that is query 0's positive
    texts_p, texts_n = ["d0", "d1", "d2", "d1"], ["n0", "n1", "d0"]
    got = multiple_negatives_ranking_loss(q, p, n, 20.0, same_text_as_positive(texts_p, texts_n))
    candidates = torch.cat([p, n])
    keep = {0: [0, 1, 2, 3, 4, 5], 1: [0, 1, 2, 4, 5, 6], 2: [0, 1, 2, 3, 4, 5, 6], 3: [0, 2, 3, 4, 5, 6]}
    expect = sum(float(torch.logsumexp(20.0 * q[i] @ candidates[keep[i]].T, 0) - 20.0 * q[i] @ p[i])
                 for i in range(4)) / 4
    assert float(got) == pytest.approx(expect, rel=1e-12)
    with pytest.raises(ValueError):
        multiple_negatives_ranking_loss(q, p, n, 20.0, torch.eye(4, 7, dtype=torch.bool))


def test_mse_is_mean_over_columns():
    s = [_unit(4, 6, seed=0), _unit(4, 6, seed=1)]
    t = [_unit(4, 6, seed=2), _unit(4, 6, seed=3)]
    expect = sum(((a - b) ** 2).mean() for a, b in zip(s, t)) / 2
    assert float(mse_distillation_loss(s, t)) == pytest.approx(float(expect), rel=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 0.1])
def test_kl_equals_explicit_kl(temperature):
    q, c = _unit(3, 8, seed=0), _unit(3 * 4, 8, seed=1).view(3, 4, 8)
    teacher = torch.randn(3, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expect = 0.0
    for b in range(3):
        student = torch.log_softmax((c[b] @ q[b]) / temperature, 0)
        target = torch.softmax(teacher[b] / temperature, 0)
        expect += float((target * (target.log() - student)).sum())
    got = kl_distillation_loss(q, c, teacher, temperature)
    assert float(got) == pytest.approx(expect / 3 * temperature ** 2, rel=1e-10)


def test_kl_matches_sentence_transformers():
    st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    q = _unit(4, 8, seed=0).float()
    cols = [_unit(4, 8, seed=s).float() for s in (1, 2, 3)]
    teacher = torch.randn(4, 3, generator=torch.Generator().manual_seed(9))
    st = st_losses.DistillKLDivLoss(model=None, temperature=0.5)
    ours = kl_distillation_loss(q, torch.stack(cols, 1), teacher, 0.5)
    assert float(ours) == pytest.approx(float(st.compute_loss_from_embeddings([q] + cols, teacher)), rel=1e-5)


def test_loss_input_errors():
    with pytest.raises(ValueError):
        multiple_negatives_ranking_loss(_unit(3, 4, seed=0), _unit(2, 4, seed=1))
    with pytest.raises(ValueError):
        kl_distillation_loss(_unit(3, 4, seed=0), _unit(3, 4, seed=1).view(3, 1, 4), torch.zeros(3, 1))
    with pytest.raises(ValueError):
        MultipleNegativesRankingLoss(scale=0)
    with pytest.raises(ValueError):
        CachedMultipleNegativesRankingLoss(mini_batch_size=0)


class _TinyEncoder(torch.nn.Module):
    """A text -> embedding function with parameters: embedding bag + a nonlinearity."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Embedding(64, 12, dtype=torch.float64)
        self.proj = torch.nn.Linear(12, 12, dtype=torch.float64)

    def forward(self, texts):
        ids = [torch.tensor([sum(map(ord, w)) % 64 for w in t.split()]) for t in texts]
        pooled = torch.stack([self.table(x).mean(0) for x in ids])
        return F.normalize(torch.tanh(self.proj(pooled)), dim=-1)


def _grads(module):
    return {n: p.grad.detach().clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("mini_batch_size,repeated", [(1, False), (3, False), (64, False), (3, True)])
def test_cached_equals_uncached_loss_and_gradients(mini_batch_size, repeated):
    enc = _TinyEncoder()
    words = "alpha beta gamma delta eps zeta eta theta iota kappa lambda mu".split()
    queries = [" ".join(words[i:i + 3]) for i in range(7)]
    positives = [" ".join(words[i + 1:i + 5]) for i in range(7)]
    negatives = [" ".join(words[i + 2:i + 4]) for i in range(9)]
    if repeated:  # one document judged for two queries, and mined as a negative for a third
        positives[5] = positives[2]
        negatives[7] = positives[2]

    plain = MultipleNegativesRankingLoss(scale=20.0)(enc, queries, positives, negatives)
    plain.backward()
    plain = plain.detach()
    expect = _grads(enc)
    enc.zero_grad(set_to_none=True)
    cached = CachedMultipleNegativesRankingLoss(scale=20.0, mini_batch_size=mini_batch_size)(
        enc, queries, positives, negatives)
    assert not cached.requires_grad
    assert float(cached) == pytest.approx(float(plain), rel=1e-12)
    for name, grad in _grads(enc).items():
        torch.testing.assert_close(grad, expect[name], rtol=1e-10, atol=1e-13, msg=name)


def test_cached_equals_uncached_on_mamba(tmp_path):
    """The same through a MambaModel (the recomputed passes see identical weights and inputs)."""
    from train_support import write_tiny_model

    from mambaret.train import BiEncoder, load_model, load_tokenizer

    folder = write_tiny_model(str(tmp_path / "m"), seed=1)
    tokenizer, _ = load_tokenizer(folder)
    model = load_model(folder)
    enc = BiEncoder(model, tokenizer, max_length=16)
    q = ["c1 r2 c3", "c4 r5", "r6 c7 c8 c9", "c10 r11 r12"]
    p = ["c13 r2 c1", "r5 c14 c15", "c9 r6", "r12 c16 r11 c17 c18"]
    n = ["c19 r20", "c21 c22 r23", "r24"]
    plain = MultipleNegativesRankingLoss()(enc, q, p, n)
    plain.backward()
    plain = plain.detach()
    expect = _grads(model)
    model.zero_grad(set_to_none=True)
    cached = CachedMultipleNegativesRankingLoss(mini_batch_size=2)(enc, q, p, n)
    assert float(cached) == pytest.approx(float(plain), rel=1e-5)
    for name, grad in _grads(model).items():  # float32: the sums run in another order
        err = float((grad - expect[name]).norm() / expect[name].norm())
        assert err < 1e-5, f"{name}: relative L2 difference {err:.2e}"


def test_weight_decay_groups():
    for name in ("layers.0.mixer.A_log", "layers.3.mixer.D", "layers.0.mixer.conv1d.bias",
                 "layers.0.mixer.dt_proj.bias", "layers.1.norm.weight", "norm_f.weight",
                 "backbone.layers.0.mixer.in_proj.bias"):
        assert no_weight_decay(name), name
    for name in ("embeddings.weight", "layers.0.mixer.in_proj.weight", "layers.0.mixer.x_proj.weight",
                 "layers.0.mixer.dt_proj.weight", "layers.0.mixer.conv1d.weight", "layers.0.mixer.out_proj.weight"):
        assert not no_weight_decay(name), name


def test_optimizer_groups_on_mamba(tmp_path):
    from train_support import write_tiny_model

    from mambaret.train import load_model

    model = load_model(write_tiny_model(str(tmp_path / "m"), use_bias=True))
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.05)
    by_id = {id(p): n for n, p in model.named_parameters()}
    decayed = {by_id[id(p)] for p in opt.param_groups[0]["params"]}
    kept = {by_id[id(p)] for p in opt.param_groups[1]["params"]}
    assert opt.param_groups[0]["weight_decay"] == 0.05 and opt.param_groups[1]["weight_decay"] == 0.0
    assert decayed | kept == set(by_id.values()) and not decayed & kept
    assert "layers.0.mixer.A_log" in kept and "layers.1.mixer.D" in kept and "norm_f.weight" in kept
    assert "layers.0.mixer.in_proj.bias" in kept and "layers.0.mixer.in_proj.weight" in decayed
    assert "embeddings.weight" in decayed


def test_optimizer_is_fused_and_steps_like_the_per_tensor_adamw(tmp_path):
    from train_support import write_tiny_model

    from mambaret.train import load_model

    folder = write_tiny_model(str(tmp_path / "m"), use_bias=True)
    fused_model, plain_model = load_model(folder), load_model(folder)
    fused = make_optimizer(fused_model, lr=1e-2, weight_decay=0.05)
    plain = torch.optim.AdamW(parameter_groups(plain_model, 0.05), lr=1e-2)  # torch's per-tensor loop
    assert fused.defaults["fused"] and not plain.defaults.get("fused")
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for a, b in zip(fused_model.parameters(), plain_model.parameters()):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        fused.step(), plain.step()
    for (name, a), b in zip(fused_model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_linear_warmup_then_decay():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=2.0)
    total = 20
    warm = warmup_steps(total, 0.1)
    assert warm == 2 and warmup_steps(25, 0.1) == 3  # ceil, as transformers counts
    sched = linear_schedule(opt, total, warm)
    lrs = []
    for _ in range(total):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[:3] == [0.0, 1.0, 2.0]
    assert lrs[2:] == pytest.approx([2.0 * (total - s) / (total - warm) for s in range(2, total)])
    assert sched.get_last_lr()[0] == 0.0


def test_schedule_matches_transformers():
    transformers = pytest.importorskip("transformers")
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    o1, o2 = torch.optim.AdamW([p1], lr=1.0), torch.optim.AdamW([p2], lr=1.0)
    ours = linear_schedule(o1, 37, warmup_steps(37, 0.1))
    theirs = transformers.get_linear_schedule_with_warmup(o2, warmup_steps(37, 0.1), 37)
    for _ in range(37):
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr())
        o1.step(); o2.step(); ours.step(); theirs.step()
