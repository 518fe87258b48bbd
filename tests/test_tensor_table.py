"""The one table of tensor kinds (csrc/models/mr_tensors.c) as the Python readers and writers see it."""
from __future__ import annotations

import numpy as np
import pytest

import mambaret as mr
from mambaret import _C
from mambaret.arch.config import read_config
from mambaret.arch.weights import core_tensor, hf_name, tensor_kinds, tensor_shape

HF_NAMES = {"embeddings.weight", "norm_f.weight", "norm.weight", "mixer.in_proj.weight", "mixer.in_proj.bias",
            "mixer.conv1d.weight", "mixer.conv1d.bias", "mixer.x_proj.weight", "mixer.dt_proj.weight",
            "mixer.dt_proj.bias", "mixer.A_log", "mixer.D", "mixer.out_proj.weight", "mixer.out_proj.bias"}


MAMBA2_NAMES = {"embeddings.weight", "norm_f.weight", "norm.weight", "mixer.in_proj.weight", "mixer.in_proj.bias",
                "mixer.conv1d.weight", "mixer.conv1d.bias", "mixer.dt_bias", "mixer.A_log", "mixer.D",
                "mixer.norm.weight", "mixer.out_proj.weight", "mixer.out_proj.bias"}


def test_table_lists_every_backbone_tensor_once_per_architecture():
    rows = _C.tensor_table()
    assert [r["kind"] for r in rows] == list(range(len(rows)))
    for arch, names in (("mamba", HF_NAMES), ("falcon_mamba", HF_NAMES), ("mamba2", MAMBA2_NAMES)):
        mine = [r for r in rows if arch in r["architectures"]]
        assert sorted(r["name"] for r in mine) == sorted(names), arch  # no name twice in one architecture
        assert {r["name"] for r in mine if not r["per_layer"]} == {"embeddings.weight", "norm_f.weight"}
        assert {r["name"] for r in mine if r["condition"] == "use_bias"} == {"mixer.in_proj.bias",
                                                                             "mixer.out_proj.bias"}
        assert {r["name"] for r in mine if r["condition"] == "use_conv_bias"} == {"mixer.conv1d.bias"}
    assert {r["name"] for r in rows if r["is_matrix"]} == {"embeddings.weight", "mixer.in_proj.weight",
                                                           "mixer.x_proj.weight", "mixer.dt_proj.weight",
                                                           "mixer.out_proj.weight"}


def test_names_map_both_ways():
    assert core_tensor("backbone.embedding.weight") == ("embeddings.weight", 0)  # mamba_ssm's name
    assert core_tensor("layers.3.mixer.A_log") == ("mixer.A_log", 3)
    assert core_tensor("layers.3.mixer.dt_bias", "mamba2") == ("mixer.dt_bias", 3)
    assert core_tensor("lm_head.weight") is None
    assert hf_name("mixer.A_log", 3) == "layers.3.mixer.A_log" and hf_name("norm_f.weight", 0) == "norm_f.weight"
    for bad in ("layers.0.embeddings.weight", "norm_f.weight.x", "layers.1.mixer.nope"):
        with pytest.raises(ValueError, match="unexpected tensor"):
            core_tensor(bad)
    with pytest.raises(ValueError, match="unexpected tensor 'layers.0.mixer.dt_bias'.*Mamba-1"):
        core_tensor("layers.0.mixer.dt_bias")
    with pytest.raises(ValueError, match="unexpected tensor 'layers.0.mixer.x_proj.weight'.*Mamba-2"):
        core_tensor("layers.0.mixer.x_proj.weight", "mamba2")


SHAPE_CONFIGS = {
    "mamba": dict(hidden_size=24, num_hidden_layers=2, vocab_size=50, state_size=5, conv_kernel=3, expand=3,
                  time_step_rank=7, use_bias=True, use_conv_bias=True),
    "falcon_mamba": dict(hidden_size=24, num_hidden_layers=2, vocab_size=50, state_size=5, conv_kernel=3, expand=2,
                         time_step_rank=7, use_bias=True, use_conv_bias=True),
    "mamba2": dict(hidden_size=24, num_hidden_layers=2, vocab_size=50, state_size=5, conv_kernel=3, expand=2,
                   num_heads=6, head_dim=8, n_groups=2, use_bias=True, use_conv_bias=True),
}


@pytest.mark.parametrize("family", sorted(SHAPE_CONFIGS))
def test_shapes_from_the_table_match_a_transformers_checkpoint(tmp_path, family):
    from conftest import build_hf_model, save_hf_model

    model = build_hf_model(SHAPE_CONFIGS[family], seed=1, family=family)
    save_hf_model(model, tmp_path)
    dims = read_config(str(tmp_path))
    assert dims.arch == family
    config = dims.core_config(vocab_rows=50)
    state = model.state_dict()
    for name, tensor in state.items():
        kind, layer = core_tensor(name, family)
        assert tensor_shape(kind, config) == tuple(tensor.shape), name
        assert hf_name(kind, layer) == name
    assert len(state) == sum(2 if row["per_layer"] else 1 for row in tensor_kinds(family).values())


def test_set_tensor_takes_table_names(tiny_model_dir):
    enc = mr.MambaEncoder.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="unknown tensor kind 'embedding'"):
        enc.model.set_tensor("embedding", 0, np.zeros((1, 1), np.float32))


def test_forward_normalizes_pooled_rows_in_the_core(tiny_model_dir):
    enc = mr.MambaEncoder.from_pretrained(tiny_model_dir)
    tokens, offsets = np.array([1, 2, 3, 4, 5], np.int32), np.array([0, 2, 5], np.int64)
    for pooling in ("last", "mean"):
        raw = enc.model.forward(tokens, offsets, pooling=pooling)
        normed = enc.model.forward(tokens, offsets, pooling=pooling, normalize=True)
        np.testing.assert_allclose(normed, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-6, atol=1e-7)
    assert enc.model.forward(tokens, offsets, pooling="all", normalize=True).shape == (5, raw.shape[1])


def test_table_names_the_architectures_of_each_tensor():
    rows = {(r["name"], r["architectures"]) for r in _C.tensor_table()}
    assert ("mixer.x_proj.weight", ("mamba", "falcon_mamba")) in rows
    assert ("mixer.A_log", ("mamba", "falcon_mamba")) in rows and ("mixer.A_log", ("mamba2",)) in rows
    assert ("norm_f.weight", ("mamba", "mamba2", "falcon_mamba")) in rows


def test_core_model_takes_its_architecture_from_the_config(tiny_model_dir):
    config = mr.read_config(tiny_model_dir).core_config(vocab_rows=64)
    _C.Model({**config, "arch": "mamba"})  # Mamba-1, the same as no "arch"
    _C.Model({**config, "arch": "falcon_mamba"})
    for arch in ("mamba3", "", 2):
        with pytest.raises(ValueError, match="config 'arch' must name an architecture the engine runs"):
            _C.Model({**config, "arch": arch})
    with pytest.raises(ValueError, match="num_heads"):  # Mamba-2 needs its heads
        _C.Model({**config, "arch": "mamba2"})
