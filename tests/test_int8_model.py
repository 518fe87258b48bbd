"""Int8 (W8A8) models: quantizing on load, the int8 folder and its bad inputs, the rotation's
effect on planted outlier channels, every SIMD path, and the command line."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import mambaret as mr
from mambaret import _C
from mambaret.arch.int8 import hadamard_block, rotation_signs, save_quantized
from mambaret.arch.random_model import random_config, random_weights

VOCAB = 1000


def write_model(path, weights, cfg):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    save_file(weights, os.path.join(path, "model.safetensors"))
    return str(path)


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    cfg = random_config(hidden_size=64, num_hidden_layers=2, vocab_size=VOCAB, use_bias=True)
    return write_model(tmp_path_factory.mktemp("f32"), random_weights(cfg, seed=3), cfg)


@pytest.fixture(scope="module")
def int8_folder(float_model, tmp_path_factory):
    return save_quantized(float_model, str(tmp_path_factory.mktemp("int8") / "m"))


def token_batches(seed=0, n=24):
    rng = np.random.default_rng(seed)
    return [list(map(int, rng.integers(1, VOCAB, rng.integers(3, 60)))) for _ in range(n)]


def cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_quantize_on_load_matches_folder_and_float(float_model, int8_folder):
    ids = token_batches()
    fp = mr.MambaEncoder.from_pretrained(float_model).encode(ids)
    on_load = mr.MambaEncoder.from_pretrained(float_model, quantize="int8").encode(ids)
    folder = mr.MambaEncoder.from_pretrained(int8_folder)
    np.testing.assert_array_equal(folder.encode(ids), on_load)  # the same scales and rotation
    assert folder.model.config["int8"] and cosines(on_load, fp).min() > 0.99
    # the float model is untouched by quantization being available
    np.testing.assert_array_equal(mr.MambaEncoder.from_pretrained(float_model).encode(ids), fp)


def test_folder_format(float_model, int8_folder):
    with open(os.path.join(int8_folder, "config.json")) as f:
        cfg = json.load(f)
    q = cfg["quantization_config"]
    assert cfg["model_type"] == "mambaret_int8" and q["quant_method"] == "mambaret_int8"
    assert q["base_model_type"] == "mamba" and q["hadamard_block"] == hadamard_block(128) == 128
    t = load_file(os.path.join(int8_folder, "model.safetensors"))
    assert "backbone.layers.0.mixer.in_proj.weight" not in t
    assert t["backbone.layers.1.mixer.in_proj.qweight"].dtype == np.int8
    assert t["backbone.layers.1.mixer.out_proj.qweight"].shape == (64, 128)
    assert t["backbone.layers.1.mixer.out_proj.weight_scale"].dtype == np.float32
    np.testing.assert_array_equal(t["backbone.layers.1.mixer.out_proj.input_rotation"], rotation_signs(1, 128))
    assert t["backbone.layers.0.mixer.in_proj.bias"].dtype == np.float32  # the rest as the checkpoint has it


def test_transformers_refuses_the_int8_folder(int8_folder):
    transformers = pytest.importorskip("transformers")
    with pytest.raises((ValueError, KeyError, OSError)):
        transformers.AutoConfig.from_pretrained(int8_folder)


def test_every_simd_path(float_model):
    ids = token_batches(1, 8)
    previous = _C.set_simd_limit("auto")
    try:
        for level in ("portable", "avx2", "avx512"):
            _C.set_simd_limit(level)
            fp = mr.MambaEncoder.from_pretrained(float_model).encode(ids)
            q = mr.MambaEncoder.from_pretrained(float_model, quantize="int8").encode(ids)
            assert cosines(q, fp).min() > 0.99, (level, _C.int8_kernels()["best"])
    finally:
        _C.set_simd_limit(previous)


def test_rotation_rescues_planted_outlier_channels(tmp_path):
    """Three channels of each layer's out_proj input 50x larger (D scaled up, out_proj's columns
    down): per-token int8 spends its range on them. The rotation spreads them over the block."""
    cfg = random_config(hidden_size=64, num_hidden_layers=2, vocab_size=VOCAB)
    w = random_weights(cfg, seed=0)
    rng = np.random.default_rng(1)
    for i in range(2):
        ch = rng.choice(cfg["intermediate_size"], 3, replace=False)
        w[f"backbone.layers.{i}.mixer.D"][ch] *= 50
        w[f"backbone.layers.{i}.mixer.out_proj.weight"][:, ch] /= 50
    path = write_model(tmp_path / "f", w, cfg)
    rotated = save_quantized(path, str(tmp_path / "r"))
    plain = save_quantized(path, str(tmp_path / "p"), rotate=False)
    ids = [list(map(int, rng.integers(1, VOCAB, 40))) for _ in range(32)]
    fp = mr.MambaEncoder.from_pretrained(path).encode(ids)
    with_rotation = cosines(mr.MambaEncoder.from_pretrained(rotated).encode(ids), fp)
    without = cosines(mr.MambaEncoder.from_pretrained(plain).encode(ids), fp)
    assert with_rotation.min() >= 0.99 and without.min() < 0.99
    assert with_rotation.mean() > without.mean()


def corrupt(int8_folder, tmp_path, change):
    t = load_file(os.path.join(int8_folder, "model.safetensors"))
    change(t)
    out = tmp_path / "bad"
    os.makedirs(out)
    for entry in os.listdir(int8_folder):
        if entry != "model.safetensors":
            with open(os.path.join(int8_folder, entry), "rb") as src, open(out / entry, "wb") as dst:
                dst.write(src.read())
    save_file(t, str(out / "model.safetensors"))
    return str(out)


L1 = "backbone.layers.1.mixer."


@pytest.mark.parametrize("change,match", [
    (lambda t: t.pop(L1 + "out_proj.weight_scale"), "out_proj.weight_scale"),
    (lambda t: t[L1 + "in_proj.weight_scale"].__setitem__(5, np.nan), "in_proj.weight_scale"),
    (lambda t: t.__setitem__(L1 + "in_proj.qweight", t[L1 + "in_proj.qweight"][:, :-1].copy()), "in_proj.qweight"),
    (lambda t: t.__setitem__(L1 + "out_proj.qweight", t[L1 + "out_proj.qweight"].astype(np.float32)), "out_proj.qweight"),
    (lambda t: t.__setitem__(L1 + "in_proj.weight_scale", t[L1 + "in_proj.weight_scale"][:-2].copy()), "in_proj"),
    (lambda t: t.__setitem__(L1 + "out_proj.input_rotation", np.ones(64, np.int8)), "input_rotation"),
    (lambda t: t.__setitem__(L1 + "out_proj.input_rotation", np.full(128, 3, np.int8)), "out_proj"),
    (lambda t: t.pop(L1 + "out_proj.input_rotation"), "input_rotation"),
    (lambda t: t.__setitem__(L1 + "in_proj.input_rotation", np.ones(32, np.int8)), "in_proj.input_rotation"),
    (lambda t: t.__setitem__(L1 + "in_proj.input_rotation", np.zeros(64, np.int8)), "in_proj"),
    (lambda t: t.pop(L1 + "in_proj.input_rotation"), "in_proj.input_rotation"),
    (lambda t: t.pop(L1 + "in_proj.qweight"), "in_proj.qweight"),
    (lambda t: t.__setitem__(L1 + "in_proj.weight", np.zeros((256, 64), np.float32)), "in_proj.weight"),
])
def test_bad_int8_folder(int8_folder, tmp_path, change, match):
    bad = corrupt(int8_folder, tmp_path, change)
    with pytest.raises(ValueError, match=match.replace(".", r"\.")):
        mr.MambaEncoder.from_pretrained(bad)


def test_bad_requests(float_model, int8_folder, tmp_path):
    with pytest.raises(ValueError, match="already an int8 folder"):
        save_quantized(int8_folder, str(tmp_path / "again"))
    with pytest.raises(ValueError, match="quantize"):
        mr.MambaEncoder.from_pretrained(float_model, quantize="int4")
    with pytest.raises(ValueError, match="CPU"):
        mr.MambaEncoder.from_pretrained(float_model, device="cuda", quantize="int8")
    with open(os.path.join(int8_folder, "config.json")) as f:
        cfg = json.load(f)
    cfg["quantization_config"]["hadamard_block"] = 48  # not a power of two: no block fits the signs
    bad = corrupt(int8_folder, tmp_path, lambda t: None)
    with open(os.path.join(bad, "config.json"), "w") as f:
        json.dump(cfg, f)
    with pytest.raises(ValueError, match="rotation"):
        mr.MambaEncoder.from_pretrained(bad)
    model = _C.Model({**mr.MambaEncoder.from_pretrained(float_model).model.config, "int8": 1})
    with pytest.raises(ValueError, match="int8"):
        model.set_tensor("mixer.in_proj.weight", 0, np.zeros((256, 64), np.float32))
    with pytest.raises(ValueError, match="missing"):
        model.finish()


def test_command_line(float_model, tmp_path):
    out = tmp_path / "q"
    run = [sys.executable, "-m", "mambaret"]
    done = subprocess.run(run + ["quantize", float_model, str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    again = subprocess.run(run + ["quantize", str(out), str(tmp_path / "q2")], capture_output=True, text=True)
    assert again.returncode == 2 and "already an int8 folder" in again.stderr
    ids = token_batches(2, 4)
    np.testing.assert_array_equal(mr.MambaEncoder.from_pretrained(str(out)).encode(ids),
                                  mr.MambaEncoder.from_pretrained(float_model, quantize="int8").encode(ids))
    assert "int8" in mr.show_config(print_out=False)


# Mamba-2 (in_proj z | xBC | dt, out_proj after the gated norm) and FalconMamba (Mamba-1's layer
# with weightless norms) take the same int8 linears through the engine's shared steps
OTHER_ARCHITECTURES = {
    "mamba2": dict(hidden_size=64, num_hidden_layers=2, vocab_size=VOCAB, num_heads=8, head_dim=16, n_groups=2,
                   state_size=16, conv_kernel=4, expand=2, use_bias=True, time_step_limit=(0.0, 1.0)),
    "falcon_mamba": dict(hidden_size=64, num_hidden_layers=2, vocab_size=VOCAB, state_size=16, conv_kernel=4,
                         expand=2, mixer_rms_eps=1e-5),
}


@pytest.mark.parametrize("family", sorted(OTHER_ARCHITECTURES))
def test_other_architectures_in_int8(tmp_path, family):
    pytest.importorskip("transformers")
    from conftest import build_hf_model, save_hf_model

    model = build_hf_model(OTHER_ARCHITECTURES[family], seed=4, family=family, perturb=0.02)
    path = save_hf_model(model, tmp_path / family)
    ids = token_batches(3, 16)
    fp = mr.MambaEncoder.from_pretrained(path).encode(ids)
    on_load = mr.MambaEncoder.from_pretrained(path, quantize="int8")
    assert on_load.dims.arch == family and on_load.model.config["int8"]
    q = on_load.encode(ids)
    folder = save_quantized(path, str(tmp_path / "int8"))
    with open(os.path.join(folder, "config.json")) as f:
        assert json.load(f)["quantization_config"]["base_model_type"] == family
    np.testing.assert_array_equal(mr.MambaEncoder.from_pretrained(folder).encode(ids), q)
    assert cosines(q, fp).min() > 0.99
    assert not np.array_equal(q, fp)  # the int8 products ran


def test_quantize_keeps_exit_heads(tmp_path):
    cfg = {**random_config(hidden_size=64, num_hidden_layers=2, vocab_size=VOCAB), "exit_layers": [2, 1]}
    w = random_weights(cfg, seed=5)
    w["exits.1.weight"] = np.random.default_rng(0).uniform(0.5, 1.5, 64).astype(np.float32)
    path = write_model(tmp_path / "f", w, cfg)
    folder = save_quantized(path, str(tmp_path / "q"))
    np.testing.assert_array_equal(load_file(os.path.join(folder, "model.safetensors"))["exits.1.weight"],
                                  w["exits.1.weight"])
    ids = token_batches(4, 8)
    np.testing.assert_array_equal(mr.MambaEncoder.from_pretrained(folder).encode(ids, exit_layer=1),
                                  mr.MambaEncoder.from_pretrained(path, quantize="int8").encode(ids, exit_layer=1))


def test_quantize_a_sentence_transformers_folder(tmp_path):
    """The packaged default model is a sentence-transformers folder (modules.json, 1_Pooling,
    2_Normalize): its int8 copy keeps the module folders and reads back as it is."""
    folder = save_quantized(mr.DEFAULT_MODEL, str(tmp_path / "q"))
    assert os.path.isfile(os.path.join(folder, "1_Pooling", "config.json"))
    texts = ["list directory contents", "a library for reading PDF files"]
    np.testing.assert_array_equal(mr.MambaEncoder.from_pretrained(folder).encode(texts),
                                  mr.MambaEncoder.from_pretrained(mr.DEFAULT_MODEL, quantize="int8").encode(texts))


def test_in_proj_input_rotation_in_the_folder(float_model, int8_folder):
    from mambaret.arch.int8 import IN_ROTATION_SEED

    with open(os.path.join(int8_folder, "config.json")) as f:
        q = json.load(f)["quantization_config"]
    assert q["format_version"] == 2 and q["in_proj_hadamard_block"] == hadamard_block(64) == 64
    t = load_file(os.path.join(int8_folder, "model.safetensors"))
    np.testing.assert_array_equal(t["backbone.layers.1.mixer.in_proj.input_rotation"],
                                  rotation_signs(1, 64, IN_ROTATION_SEED))


def test_version_1_folder_without_the_in_proj_rotation_still_loads(float_model, int8_folder, tmp_path):
    """Folders written before in_proj's input was rotated (format 1: out_proj's rotation only)."""
    from mambaret.arch.int8 import quantize_linears

    old = str(tmp_path / "v1")
    shutil.copytree(int8_folder, old)
    t = load_file(os.path.join(old, "model.safetensors"))
    f = load_file(os.path.join(float_model, "model.safetensors"))
    for layer in range(2):
        prefix = f"backbone.layers.{layer}.mixer."
        v1 = quantize_linears(f[prefix + "in_proj.weight"], f[prefix + "out_proj.weight"], layer,
                              {"in_proj": 0, "out_proj": 128})
        del t[prefix + "in_proj.input_rotation"]
        t.update({prefix + k: v for k, v in v1.items()})
    save_file(t, os.path.join(old, "model.safetensors"))
    with open(os.path.join(old, "config.json")) as fh:
        cfg = json.load(fh)
    cfg["quantization_config"]["format_version"] = 1
    del cfg["quantization_config"]["in_proj_hadamard_block"]
    with open(os.path.join(old, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    ids = token_batches(5, 8)
    fp = mr.MambaEncoder.from_pretrained(float_model).encode(ids)
    got = mr.MambaEncoder.from_pretrained(old).encode(ids)
    assert cosines(got, fp).min() > 0.99
    assert not np.array_equal(got, mr.MambaEncoder.from_pretrained(int8_folder).encode(ids))


def test_in_proj_rotation_rescues_planted_weight_outliers(tmp_path):
    """A few weights of each in_proj row 30x larger: the row's int8 scale is set by them and the
    rest of the row rounds coarsely. Rotating in_proj's input spreads them over the row."""
    cfg = random_config(hidden_size=64, num_hidden_layers=2, vocab_size=VOCAB)
    w = random_weights(cfg, seed=6)
    rng = np.random.default_rng(2)
    for i in range(2):
        W = w[f"backbone.layers.{i}.mixer.in_proj.weight"]
        rows = np.arange(W.shape[0])
        W[rows, rng.integers(0, W.shape[1], W.shape[0])] *= 30
    path = write_model(tmp_path / "f", w, cfg)
    ids = [list(map(int, rng.integers(1, VOCAB, 40))) for _ in range(32)]
    fp = mr.MambaEncoder.from_pretrained(path).encode(ids)
    rotated = cosines(mr.MambaEncoder.from_pretrained(save_quantized(path, str(tmp_path / "r"))).encode(ids), fp)
    plain = cosines(mr.MambaEncoder.from_pretrained(save_quantized(path, str(tmp_path / "p"), rotate=False)).encode(ids), fp)
    assert rotated.min() > 0.98 and plain.min() < 0.95  # 0.991 and 0.935 when written
    assert rotated.mean() > plain.mean()
