"""Mamba-2 and FalconMamba: parity with transformers' Mamba2Model and FalconMambaModel, the
mamba_ssm folder format, the SSD scan and gated norm kernels against their references, and bad
configs and tensors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import mambaret as mr
from mambaret import _C
from conftest import assert_close_to_reference, assert_encoder_matches, build_hf_model, hf_states, save_hf_model

# (id, Mamba2Config kwargs, causal_lm); lengths up to 1,200 run in one packed batch below
MAMBA2_CONFIGS = [
    ("g1-h8-n16-chunk8", dict(hidden_size=32, num_hidden_layers=2, vocab_size=97, num_heads=8, head_dim=8, n_groups=1,
                              state_size=16, conv_kernel=4, expand=2, chunk_size=8), False),
    ("g2-h16-n32-nobias", dict(hidden_size=64, num_hidden_layers=2, vocab_size=90, num_heads=8, head_dim=16,
                               n_groups=2, state_size=32, conv_kernel=3, expand=2, use_conv_bias=False,
                               chunk_size=64), True),
    ("g4-h32-n64-limit", dict(hidden_size=64, num_hidden_layers=1, vocab_size=80, num_heads=4, head_dim=32,
                              n_groups=4, state_size=64, conv_kernel=2, expand=2, chunk_size=300,
                              time_step_limit=(0.01, 0.3)), False),
    ("g1-h64-n128-bias", dict(hidden_size=64, num_hidden_layers=2, vocab_size=70, num_heads=2, head_dim=64,
                              n_groups=1, state_size=128, conv_kernel=4, expand=2, use_bias=True, chunk_size=16),
     True),
    ("g2-h24-n16-tied", dict(hidden_size=48, num_hidden_layers=3, vocab_size=64, num_heads=4, head_dim=24, n_groups=2,
                             state_size=16, conv_kernel=4, expand=2, tie_word_embeddings=True, chunk_size=32), True),
    ("g4-h8-n24-k2", dict(hidden_size=16, num_hidden_layers=2, vocab_size=50, num_heads=4, head_dim=8, n_groups=4,
                          state_size=24, conv_kernel=2, expand=2, use_conv_bias=True, chunk_size=5,
                          time_step_limit=(0.0, 0.05)), False),
    ("g1-h16-x3", dict(hidden_size=32, num_hidden_layers=2, vocab_size=60, num_heads=6, head_dim=16, n_groups=1,
                       state_size=8, conv_kernel=3, expand=3, chunk_size=1000, layer_norm_epsilon=1e-3), False),
    ("g2-h40-untied-lm", dict(hidden_size=40, num_hidden_layers=2, vocab_size=66, num_heads=2, head_dim=40,
                              n_groups=2, state_size=16, conv_kernel=4, expand=2, tie_word_embeddings=False,
                              use_bias=True, chunk_size=40), True),
]


@pytest.mark.parametrize("name,cfg,causal_lm", MAMBA2_CONFIGS, ids=[c[0] for c in MAMBA2_CONFIGS])
def test_mamba2_matches_transformers(tmp_path, name, cfg, causal_lm):
    model = build_hf_model(cfg, seed=len(name), causal_lm=causal_lm, family="mamba2")
    path = save_hf_model(model, tmp_path / name)
    enc = mr.MambaEncoder.from_pretrained(path, threads=2, max_tokens=300)
    assert enc.dims.arch == "mamba2"
    rng = np.random.default_rng(len(name))
    lengths = [1, 2, 9, 40, 299, 301, 1200] if name.startswith("g1-h8") else [1, 7, 40, 77, 333]
    sequences = [rng.integers(0, cfg["vocab_size"], n).tolist() for n in lengths]
    # one packed batch crossing micro-batch (300 tokens) and chunk boundaries
    assert_encoder_matches(enc, model, sequences, name, batch_size=len(sequences))


def test_mamba2_130m_shape_matches_transformers(tmp_path):
    cfg = dict(hidden_size=768, num_hidden_layers=24, vocab_size=1000, num_heads=24, head_dim=64, n_groups=1,
               state_size=128, conv_kernel=4, expand=2)
    model = build_hf_model(cfg, seed=5, family="mamba2", perturb=0.01)
    path = save_hf_model(model, tmp_path / "m2-130m")
    enc = mr.MambaEncoder.from_pretrained(path, threads=2)
    ids = np.random.default_rng(5).integers(0, 1000, 512).tolist()
    ref = hf_states(model, ids)
    assert_close_to_reference(enc.encode([ids], output_value="token_embeddings")[0], ref, 1e-4, "130M shape states")
    assert_close_to_reference(enc.encode([ids])[0], ref[-1], 1e-4, "130M shape pooled")


FALCON_CONFIGS = [
    ("d32-n16", dict(hidden_size=32, num_hidden_layers=2, vocab_size=90, state_size=16, conv_kernel=4, expand=2,
                     mixer_rms_eps=1e-6), False),
    ("d24-bias-eps", dict(hidden_size=24, num_hidden_layers=3, vocab_size=70, state_size=8, conv_kernel=3, expand=3,
                          use_bias=True, mixer_rms_eps=1e-3, time_step_rank=5), True),
]


@pytest.mark.parametrize("name,cfg,causal_lm", FALCON_CONFIGS, ids=[c[0] for c in FALCON_CONFIGS])
def test_falcon_mamba_matches_transformers(tmp_path, name, cfg, causal_lm):
    model = build_hf_model(cfg, seed=len(name), causal_lm=causal_lm, family="falcon_mamba")
    path = save_hf_model(model, tmp_path / name)
    enc = mr.MambaEncoder.from_pretrained(path, threads=2, max_tokens=64)
    assert enc.dims.arch == "falcon_mamba"
    rng = np.random.default_rng(3)
    sequences = [rng.integers(0, cfg["vocab_size"], n).tolist() for n in (1, 5, 63, 130)]
    assert_encoder_matches(enc, model, sequences, name, batch_size=4)
    # the norms matter: the same weights read as plain Mamba-1 give other states
    plain = mr.MambaEncoder.from_pretrained(_as_model_type(path, tmp_path / "plain", "mamba"), threads=2)
    assert not np.allclose(plain.encode(sequences[2:3])[0], enc.encode(sequences[2:3])[0], atol=1e-3)


def _as_model_type(src: str, dst, model_type: str) -> str:
    import shutil

    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["model_type"] = model_type
    (dst / "config.json").write_text(json.dumps(config))
    return str(dst)


def test_falcon_mamba_intermediate_size_wins_over_expand():
    cfg = {"model_type": "falcon_mamba", "hidden_size": 64, "num_hidden_layers": 2, "expand": 16,
           "intermediate_size": 128}
    dims = mr.parse_config(cfg)
    assert dims.intermediate_size == 128 and dims.mixer_rms_eps == 1e-6 and dims.arch == "falcon_mamba"


def test_mamba_ssm_folder_equals_its_transformers_conversion(tmp_path):
    from safetensors.numpy import save_file

    cfg = dict(hidden_size=32, num_hidden_layers=2, vocab_size=100, num_heads=4, head_dim=16, n_groups=2,
               state_size=16, conv_kernel=4, expand=2, use_conv_bias=True, time_step_limit=(0.0, 0.2))
    model = build_hf_model(cfg, seed=9, causal_lm=True, family="mamba2")
    hf_path = save_hf_model(model, tmp_path / "hf")
    ssm_dir = tmp_path / "mamba_ssm"
    ssm_dir.mkdir()
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v.detach().numpy().copy()
             for k, v in model.state_dict().items()}
    save_file(state, str(ssm_dir / "model.safetensors"))
    (ssm_dir / "config.json").write_text(json.dumps({
        "d_model": 32, "n_layer": 2, "vocab_size": 100, "pad_vocab_size_multiple": 4, "rms_norm": True,
        "residual_in_fp32": True, "fused_add_norm": True, "tie_embeddings": True,
        "ssm_cfg": {"layer": "Mamba2", "d_state": 16, "d_conv": 4, "expand": 2, "headdim": 16, "ngroups": 2,
                    "dt_limit": [0.0, 0.2], "chunk_size": 256}}))
    dims = mr.read_config(str(ssm_dir))
    assert (dims.arch, dims.source_format, dims.num_heads, dims.n_groups) == ("mamba2", "mamba_ssm", 4, 2)
    texts = [[5, 6, 7], list(range(1, 60))]
    ours = mr.MambaEncoder.from_pretrained(str(ssm_dir)).encode(texts)
    theirs = mr.MambaEncoder.from_pretrained(hf_path).encode(texts)
    np.testing.assert_array_equal(ours, theirs)


# --- kernels against their reference twins, on every SIMD path this CPU has


def _scan_inputs(L, H, P, G, N, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    return dict(x=f(L, H * P), dt=f(L, H), A=-np.exp(f(H)), B=f(L, G * N), C=f(L, G * N)), f(H), f(H)


@pytest.mark.parametrize("simd", ["avx512", "avx2", "portable"])
@pytest.mark.parametrize("L,H,P,G,N", [(1, 1, 8, 1, 1), (37, 4, 16, 2, 9), (70, 6, 64, 3, 128), (5, 2, 12, 1, 16)])
def test_ssd_scan_matches_reference(simd, L, H, P, G, N):
    inputs, dt_bias, D = _scan_inputs(L, H, P, G, N)
    ref_y, ref_state = _C.op_ssd_scan(**inputs, heads=H, groups=G, dt_bias=dt_bias, D=D, dt_min=0.01, dt_max=2.0,
                                      variant="reference")
    previous = _C.set_simd_limit(simd)
    try:
        for threads in (1, 2):
            y, state = _C.op_ssd_scan(**inputs, heads=H, groups=G, dt_bias=dt_bias, D=D, dt_min=0.01, dt_max=2.0,
                                      threads=threads)
            np.testing.assert_allclose(y, ref_y, rtol=2e-5, atol=2e-5 * np.abs(ref_y).max())
            np.testing.assert_allclose(state, ref_state, rtol=2e-5, atol=2e-5 * np.abs(ref_state).max())
        # a sequence split in two, the state carried between, gives the whole's outputs
        cut = L // 2
        first = {k: (v[:cut] if k != "A" else v) for k, v in inputs.items()}
        second = {k: (v[cut:] if k != "A" else v) for k, v in inputs.items()}
        y1, s1 = _C.op_ssd_scan(**first, heads=H, groups=G, dt_bias=dt_bias, D=D, dt_min=0.01, dt_max=2.0)
        y2, s2 = _C.op_ssd_scan(**second, heads=H, groups=G, dt_bias=dt_bias, D=D, dt_min=0.01, dt_max=2.0, state=s1)
        np.testing.assert_allclose(np.concatenate([y1, y2]), ref_y, rtol=2e-5, atol=2e-5 * np.abs(ref_y).max())
        np.testing.assert_allclose(s2, ref_state, rtol=2e-5, atol=2e-5 * np.abs(ref_state).max())
    finally:
        _C.set_simd_limit(previous)


def test_ssd_scan_portable_matches_reference():
    inputs, dt_bias, D = _scan_inputs(19, 3, 20, 3, 7, seed=4)
    ref = _C.op_ssd_scan(**inputs, heads=3, groups=3, dt_bias=dt_bias, D=D, variant="reference")
    ours = _C.op_ssd_scan(**inputs, heads=3, groups=3, dt_bias=dt_bias, D=D, variant="portable")
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * np.abs(b).max())


def test_ssd_scan_clamps_delta_to_the_time_step_limit():
    inputs, _, _ = _scan_inputs(4, 1, 8, 1, 4, seed=2)
    inputs["dt"][:] = 50.0  # softplus(50) = 50, clamped to 0.1
    y, _ = _C.op_ssd_scan(**inputs, heads=1, groups=1, dt_max=0.1, variant="reference")
    x, B, C = inputs["x"], inputs["B"], inputs["C"]
    decay = math.exp(0.1 * inputs["A"][0])
    state = np.zeros((4, 8))
    for t in range(4):
        state = decay * state + 0.1 * np.outer(B[t], x[t])
        np.testing.assert_allclose(y[t], C[t] @ state, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("simd", ["avx512", "avx2", "portable"])
@pytest.mark.parametrize("group", [4, 12, 16, 48])
def test_gated_rmsnorm_matches_reference(simd, group):
    rng = np.random.default_rng(group)
    y, z = rng.standard_normal((9, 96)).astype(np.float32), 3 * rng.standard_normal((9, 96)).astype(np.float32)
    w = rng.standard_normal(96).astype(np.float32)
    ref = _C.op_gated_rmsnorm(y, z, w, group, 1e-5, variant="reference")
    previous = _C.set_simd_limit(simd)
    try:
        ours = _C.op_gated_rmsnorm(y, z, w, group, 1e-5, threads=2)
    finally:
        _C.set_simd_limit(previous)
    np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=2e-6)
    v = (y * z / (1 + np.exp(-z))).reshape(9, 96 // group, group)
    expected = (v / np.sqrt((v ** 2).mean(-1, keepdims=True) + 1e-5)).reshape(9, 96) * w
    np.testing.assert_allclose(ref, expected, rtol=1e-5, atol=1e-6)


# --- bad configs and tensors: ValueErrors that name the field or tensor, before the weights load

BASE = {"model_type": "mamba2", "hidden_size": 32, "num_hidden_layers": 1, "vocab_size": 50, "num_heads": 4,
        "head_dim": 16, "n_groups": 2, "state_size": 8, "expand": 2}


@pytest.mark.parametrize("change,match", [
    ({"head_dim": 8}, "num_heads \\* head_dim = 4 \\* 8 must equal the intermediate size"),
    ({"n_groups": 3}, "n_groups 3 must divide num_heads 4"),
    ({"time_step_limit": [0.0, float("nan")]}, "time_step_limit"),
    ({"time_step_limit": [-0.1, 1.0]}, "time_step_limit"),
    ({"time_step_limit": [0.5, 0.1]}, "time_step_limit"),
    ({"time_step_limit": "fast"}, "time_step_limit"),
    ({"num_heads": 0}, "num_heads"),
    ({"layer_norm_epsilon": -1}, "layer_norm_epsilon"),
])
def test_bad_mamba2_configs(change, match):
    with pytest.raises(ValueError, match=match):
        mr.parse_config({**BASE, **change})


def test_time_step_limit_as_transformers_writes_it():
    dims = mr.parse_config({**BASE, "time_step_limit": [0.0, {"__float__": "Infinity"}]})
    assert dims.time_step_limit == (0.0, math.inf)


@pytest.mark.parametrize("tensor,shape,match", [
    ("backbone.layers.0.mixer.in_proj.weight", (150, 32), "in_proj.weight' has shape \\(150, 32\\).*"
                                                          "2\\*intermediate_size\\+2\\*n_groups\\*state_size"),
    ("backbone.layers.0.mixer.conv1d.weight", (96, 1, 3), "conv1d.weight' has shape \\(96, 1, 3\\).*conv_kernel = 4"),
    ("backbone.layers.0.mixer.dt_bias", (5,), "dt_bias' has shape \\(5\\), expected \\(4\\).*num_heads = 4"),
])
def test_bad_mamba2_tensors(tmp_path, tensor, shape, match):
    cfg = {k: v for k, v in BASE.items() if k != "model_type"}
    model = build_hf_model(cfg, seed=1, family="mamba2")
    path = save_hf_model(model, tmp_path / "m")
    from safetensors.numpy import load_file, save_file

    state = load_file(f"{path}/model.safetensors")
    name = tensor if tensor in state else tensor.replace("backbone.", "")
    state[name] = np.zeros(shape, np.float32)
    save_file(state, f"{path}/model.safetensors")
    with pytest.raises(ValueError, match=match):
        mr.MambaEncoder.from_pretrained(path)


# --- training: mambaret.nn under transformers' names, the C scan's gradients, `mambaret train`

NN_CONFIGS = {
    "mamba2": dict(hidden_size=32, num_hidden_layers=2, vocab_size=60, num_heads=4, head_dim=16, n_groups=2,
                   state_size=8, conv_kernel=4, expand=2, time_step_limit=(0.0, 0.7)),
    "falcon_mamba": dict(hidden_size=32, num_hidden_layers=2, vocab_size=60, state_size=8, conv_kernel=4, expand=2,
                         mixer_rms_eps=1e-4),
}


@pytest.mark.parametrize("family", sorted(NN_CONFIGS))
def test_nn_module_matches_transformers_and_its_gradients(tmp_path, family):
    import torch

    from mambaret.nn import MambaModel

    hf = build_hf_model(NN_CONFIGS[family], seed=2, family=family)
    path = save_hf_model(hf, tmp_path / family)
    ours = MambaModel.from_pretrained(path)
    ours.load_state_dict(hf.state_dict(), strict=True)  # the same names both ways
    hf.load_state_dict(ours.state_dict(), strict=True)
    ids = torch.randint(0, 60, (2, 17), generator=torch.Generator().manual_seed(0))
    hf64, ours64 = hf.double(), MambaModel.from_pretrained(path).double()
    reference = hf64(ids).last_hidden_state
    grad_out = torch.randn(reference.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    names = [name for name, _ in hf64.named_parameters()]
    expected = dict(zip(names, torch.autograd.grad((reference * grad_out).sum(), list(hf64.parameters()))))
    for model in (ours64, ours64.float()):  # float64: the torch reference; float32: the C kernels
        out = model(ids)
        assert_close_to_reference(out.detach().double().numpy(), reference.detach().numpy(), 1e-5, family)
        grads = torch.autograd.grad((out * grad_out.to(out.dtype)).sum(), list(model.parameters()))
        for (name, _), grad in zip(model.named_parameters(), grads):
            err = float((grad.double() - expected[name]).norm() / expected[name].norm().clamp_min(1e-30))
            assert err <= 1e-4, f"{family} {out.dtype} gradient of {name}: relative error {err:.3g}"
    saved = ours.save_pretrained(str(tmp_path / "saved"))
    assert mr.read_config(saved).arch == family
    texts = [[1, 2, 3], list(range(5, 40))]
    np.testing.assert_allclose(mr.MambaEncoder.from_pretrained(saved).encode(texts),
                               mr.MambaEncoder.from_pretrained(path).encode(texts), rtol=1e-6, atol=1e-7)


def test_ssd_scan_kernel_gradients_match_the_reference():
    import torch

    from mambaret.nn.functional import ssd_scan, ssd_scan_reference

    torch.manual_seed(0)
    T, H, P, G, N = 75, 4, 8, 2, 5
    offsets = torch.tensor([0, 7, 8, 75])  # 75 tokens: more than two of the backward's chunks
    make = lambda *shape: torch.randn(*shape, dtype=torch.float64, requires_grad=True)  # noqa: E731
    inputs = [make(T, H * P), make(T, H), make(H), (-torch.rand(H, dtype=torch.float64) - 0.1).requires_grad_(),
              make(T, G * N), make(T, G * N), make(H)]
    limit = (0.05, 1.5)  # some deltas clamp on both sides
    reference = ssd_scan_reference(*inputs, offsets, H, G, limit)
    grad_y = torch.randn_like(reference)
    expected = torch.autograd.grad(reference, inputs, grad_y)
    floats = [t.detach().float().requires_grad_() for t in inputs]
    ours = ssd_scan(*floats, offsets, H, G, limit)
    assert_close_to_reference(ours.detach().double().numpy(), reference.detach().numpy(), 1e-6, "forward")
    for name, got, want in zip("x dt dt_bias A B C D".split(), torch.autograd.grad(ours, floats, grad_y.float()),
                               expected):
        assert_close_to_reference(got.double().numpy(), want.numpy(), 1e-5, f"gradient of {name}")


@pytest.mark.parametrize("family", sorted(NN_CONFIGS))
def test_train_fine_tunes_the_other_architectures(tmp_path, family):
    from train_support import COMMON, RARE, synthetic_pairs, write_pairs_jsonl, write_word_tokenizer

    from mambaret.app.cli import main

    vocab = len(COMMON) + len(RARE) + 2
    model = build_hf_model({**NN_CONFIGS[family], "vocab_size": vocab}, seed=3, family=family)
    path = save_hf_model(model, tmp_path / "model")
    write_word_tokenizer(f"{path}/tokenizer.json", COMMON + RARE)
    pairs = write_pairs_jsonl(str(tmp_path / "pairs.jsonl"), synthetic_pairs(8, seed=1))
    out = str(tmp_path / "out")
    assert main(["train", path, "--train", pairs, "--output", out, "--epochs", "1", "--batch-size", "4", "--lr",
                 "1e-3", "--max-length", "12", "--threads", "1", "--quiet"]) == 0
    trained = mr.MambaEncoder.from_pretrained(out, threads=1)
    assert trained.dims.arch == family
    texts = ["c1 r2 c3", "r4 c5"]
    assert not np.allclose(trained.encode(texts), mr.MambaEncoder.from_pretrained(path, threads=1).encode(texts))


# --- sentence-transformers: a Mamba-2 model behind the layout embedding models publish

@pytest.mark.parametrize("family", ["mamba2", "falcon_mamba"])
def test_sentence_transformers_folder_of_another_architecture(tmp_path, tokenizer_json, family):
    """An embedding model's published layout (modules.json with last-token pooling and Normalize,
    prompts, the tokenizer) around a Mamba-2 or FalconMamba checkpoint: from_pretrained reads it,
    and SentenceTransformer on the exported folder computes the same embeddings."""
    st = pytest.importorskip("sentence_transformers")
    from mambaret.integrations.sentence_transformers import export

    cfg = {**NN_CONFIGS[family], "vocab_size": 50280}
    model = build_hf_model(cfg, seed=4, family=family)
    path = save_hf_model(model, tmp_path / "ckpt")
    import shutil

    shutil.copyfile(tokenizer_json, f"{path}/tokenizer.json")
    prompts = {"query": "Instruct: Given a web search query, retrieve relevant passages\nQuery: ", "document": ""}
    encoder = mr.MambaEncoder.from_pretrained(path, threads=1, prompts=prompts)
    folder = export(encoder, str(tmp_path / "st"))
    reread = mr.MambaEncoder.from_pretrained(folder, threads=1)
    assert reread.dims.arch == family and reread.prompts == prompts
    texts = ["state space models read left to right", "x", "what is a selective scan?"]
    ours = reread.encode_query(texts)
    direct = encoder.encode_query(texts)
    if reread.normalize and not encoder.normalize:
        direct = direct / np.linalg.norm(direct, axis=1, keepdims=True)
    np.testing.assert_allclose(ours, direct, rtol=1e-5, atol=1e-6)
    theirs = st.SentenceTransformer(folder, device="cpu").encode(texts, prompt_name="query")
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=2e-5)


def test_cli_encodes_with_a_mamba2_folder(tmp_path, tokenizer_json):
    import shutil

    from mambaret.app.cli import main

    model = build_hf_model({**NN_CONFIGS["mamba2"], "vocab_size": 50280}, seed=6, family="mamba2")
    path = save_hf_model(model, tmp_path / "m2")
    shutil.copyfile(tokenizer_json, f"{path}/tokenizer.json")
    corpus = tmp_path / "docs.txt"
    corpus.write_text("state space models\nselective scans read left to right\n")
    out = tmp_path / "emb.npy"
    assert main(["encode", path, str(corpus), "-o", str(out), "--quiet", "--threads", "1"]) == 0
    expected = mr.MambaEncoder.from_pretrained(path, threads=1).encode(
        ["state space models", "selective scans read left to right"], normalize_embeddings=True)
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)
