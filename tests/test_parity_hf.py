"""Parity with HF transformers (torch CPU) on perturbed random Mamba models."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import mambaret as mr
from mambaret import _C
from conftest import assert_close_to_reference, assert_encoder_matches, build_hf_model, hf_states, save_hf_model

# (id, config kwargs, causal_lm, checkpoint dtype, extra build kwargs)
CONFIGS = [
    ("d37-x3-bias", dict(hidden_size=37, num_hidden_layers=2, vocab_size=101, state_size=4, conv_kernel=3,
                         expand=3, use_bias=True, use_conv_bias=True), False, None, {}),
    ("d64-rank5-nobias", dict(hidden_size=64, num_hidden_layers=1, vocab_size=97, state_size=16, conv_kernel=4,
                              expand=2, time_step_rank=5, use_bias=False, use_conv_bias=False), True, None, {}),
    ("d45-k2-small-init", dict(hidden_size=45, num_hidden_layers=3, vocab_size=80, state_size=16, conv_kernel=2,
                               expand=2, use_bias=True, use_conv_bias=False, initializer_range=1e-3,
                               layer_norm_epsilon=1e-3), False, None, {"embedding_perturb": 1e-3}),
    ("d33-x3-rank3-lm", dict(hidden_size=33, num_hidden_layers=2, vocab_size=64, state_size=4, conv_kernel=4,
                             expand=3, time_step_rank=3, use_bias=True, use_conv_bias=True), True, None, {}),
    ("d24-4layers", dict(hidden_size=24, num_hidden_layers=4, vocab_size=50, state_size=16, conv_kernel=3,
                         expand=2, use_bias=False, use_conv_bias=True), False, None, {}),
    ("d40-x1", dict(hidden_size=40, num_hidden_layers=2, vocab_size=70, state_size=4, conv_kernel=4,
                    expand=1, use_bias=False, use_conv_bias=True), True, None, {}),
    ("d48-bf16", dict(hidden_size=48, num_hidden_layers=2, vocab_size=90, state_size=16, conv_kernel=4,
                      expand=2, use_bias=True, use_conv_bias=True), False, "bfloat16", {}),
    ("d29-fp16-lm", dict(hidden_size=29, num_hidden_layers=2, vocab_size=60, state_size=4, conv_kernel=2,
                         expand=2, time_step_rank=7, use_bias=False, use_conv_bias=False), True, "float16", {}),
]


def reference_model(model, dtype):
    """The reference for a reduced-precision checkpoint is HF on the same (rounded) weights in fp32."""
    if dtype is None:
        return model
    import copy

    import torch

    return copy.deepcopy(model).to(getattr(torch, dtype)).float()


@pytest.mark.parametrize("name,cfg,causal_lm,dtype,extra", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_matches_transformers(tmp_path, name, cfg, causal_lm, dtype, extra):
    model = build_hf_model(cfg, seed=len(name), causal_lm=causal_lm, **extra)
    path = save_hf_model(model, tmp_path / name, dtype=dtype)
    reference = reference_model(model, dtype)
    enc = mr.MambaEncoder.from_pretrained(path, threads=2)
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, cfg["vocab_size"], n).tolist() for n in (1, 2, 9, 40, 77)]
    assert_encoder_matches(enc, reference, sequences, name)


def test_mixed_lengths_across_micro_batches(tmp_path):
    cfg = dict(hidden_size=32, num_hidden_layers=2, vocab_size=120, state_size=8, conv_kernel=4, expand=2,
               use_bias=True)
    model = build_hf_model(cfg, seed=11)
    path = save_hf_model(model, tmp_path / "mixed")
    enc = mr.MambaEncoder.from_pretrained(path, threads=2, max_tokens=500)
    rng = np.random.default_rng(1)
    lengths = [1, 1200, 3, 499, 500, 501, 17, 1000, 2]
    sequences = [rng.integers(0, 120, n).tolist() for n in lengths]
    # one packed batch, many micro-batches
    assert_encoder_matches(enc, model, sequences, "mixed lengths", batch_size=len(sequences))


@pytest.mark.skipif(bool(os.environ.get("MAMBARET_SIMD")), reason="already narrowed to one instruction set")
@pytest.mark.parametrize("simd", ["avx2", "portable"])
def test_matches_transformers_on_every_vector_path(simd):
    """The model runs the widest instruction set the CPU has; on a narrower one the kernels differ
    and, with no vector path at all, x_proj and dt_proj go through the BLAS instead of the packed
    kernels. The parity tests again in a subprocess with MAMBARET_SIMD narrowed."""
    if simd == "avx2" and _C.build_info().get("simd", "").startswith("portable"):
        pytest.skip("this CPU has no AVX2")
    env = dict(os.environ, MAMBARET_SIMD=simd)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                          "(matches_transformers and not every_vector_path) or mixed_lengths"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "deselected" in run.stdout


def test_mamba_130m_shape(tmp_path):
    # HF's default initializer_range (0.1) makes a deep random model chaotic: there even HF fp32
    # and fp64 differ by 4e-4. 0.02 gives a well-conditioned model, like trained ones.
    cfg = dict(hidden_size=768, num_hidden_layers=24, vocab_size=50280, state_size=16, conv_kernel=4, expand=2,
               initializer_range=0.02)
    model = build_hf_model(cfg, seed=130, causal_lm=True, perturb=0.02)
    path = save_hf_model(model, tmp_path / "m130")
    enc = mr.MambaEncoder.from_pretrained(path, threads=2)
    ids = np.random.default_rng(5).integers(0, 50280, 512).tolist()
    ref = hf_states(model, ids)
    tokens = enc.encode([ids], output_value="token_embeddings")[0]
    assert_close_to_reference(tokens, ref, 1e-4, "130M shape all states")
    assert_close_to_reference(enc.encode(ids), ref[-1], 1e-4, "130M shape pooled")


def test_mamba_ssm_layout(tmp_path):
    """The original mamba_ssm config keys and `backbone.embedding.weight` load and match."""
    import json

    from safetensors.torch import save_file

    cfg = dict(hidden_size=40, num_hidden_layers=2, vocab_size=56, state_size=16, conv_kernel=4, expand=2,
               use_bias=False, use_conv_bias=True)
    model = build_hf_model(cfg, seed=21, causal_lm=True)
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v.contiguous()
             for k, v in model.state_dict().items()}
    state["lm_head.weight"] = state["backbone.embedding.weight"].clone()
    out = tmp_path / "mamba_ssm"
    out.mkdir()
    save_file(state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({
        "d_model": 40, "d_intermediate": 0, "n_layer": 2, "vocab_size": 50, "ssm_cfg": {},
        "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
        "fused_add_norm": True, "pad_vocab_size_multiple": 8, "tie_embeddings": True}))
    enc = mr.MambaEncoder.from_pretrained(str(out), threads=1)
    assert enc.dims.source_format == "mamba_ssm"
    ids = list(range(1, 30))
    assert_close_to_reference(enc.encode(ids), hf_states(model, ids)[-1], 1e-5, "mamba_ssm layout")


@pytest.mark.parametrize("layout", ["sharded", "pytorch_bin"])
def test_other_weight_layouts(tmp_path, layout):
    """Sharded safetensors (model.safetensors.index.json) and pytorch_model.bin load and match."""
    cfg = dict(hidden_size=32, num_hidden_layers=3, vocab_size=77, state_size=4, conv_kernel=4, expand=2)
    model = build_hf_model(cfg, seed=31, causal_lm=True)
    out = tmp_path / layout
    if layout == "sharded":
        model.save_pretrained(str(out), max_shard_size="20KB")
        assert (out / "model.safetensors.index.json").exists() and not (out / "model.safetensors").exists()
    else:
        import torch

        out.mkdir()
        torch.save(model.state_dict(), str(out / "pytorch_model.bin"))
        model.config.save_pretrained(str(out))
    enc = mr.MambaEncoder.from_pretrained(str(out), threads=1)
    ids = list(range(3, 40))
    assert_close_to_reference(enc.encode(ids), hf_states(model, ids)[-1], 1e-5, layout)
