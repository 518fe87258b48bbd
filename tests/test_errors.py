"""Bad input gets a clear Python exception, never a crash; valid edge cases get defined results."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import mambaret as mr
from mambaret import _C


def copy_model(src, dst):
    shutil.copytree(src, dst)
    return str(dst)


def edit_config(path, **changes):
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)


def edit_weights(path, fn):
    file = os.path.join(path, "model.safetensors")
    tensors = load_file(file)
    fn(tensors)
    save_file(tensors, file)


def test_missing_config(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "m")
    os.remove(os.path.join(path, "config.json"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        mr.MambaEncoder.from_pretrained(path)


def test_malformed_config(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "m")
    with open(os.path.join(path, "config.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        mr.MambaEncoder.from_pretrained(path)


def test_config_missing_field(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "m")
    edit_config(path, hidden_size=None)
    with pytest.raises(ValueError, match="hidden_size"):
        mr.MambaEncoder.from_pretrained(path)


def test_config_bad_value(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "m")
    edit_config(path, state_size=-3)
    with pytest.raises(ValueError, match="state_size"):
        mr.MambaEncoder.from_pretrained(path)


@pytest.mark.parametrize("cfg,match", [
    ({"model_type": "zamba2", "hidden_size": 8, "num_hidden_layers": 1}, "zamba2"),
    ({"d_model": 8, "n_layer": 1, "ssm_cfg": {"layer": "Mamba3"}}, "Mamba3"),
    ({"d_model": 8, "n_layer": 1, "rms_norm": False}, "rms_norm"),
    ({"d_model": 8, "n_layer": 1, "d_intermediate": 32}, "d_intermediate"),
    ({"d_model": 8, "n_layer": 1, "attn_layer_idx": [0]}, "attention"),
])
def test_unsupported_configs(cfg, match):
    with pytest.raises(ValueError, match=match):
        mr.parse_config(cfg)


def test_missing_tensor(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "m")
    edit_weights(path, lambda t: t.pop("backbone.layers.1.mixer.D"))
    with pytest.raises(ValueError, match=r"missing tensor 'layers.1.mixer.D'"):
        mr.MambaEncoder.from_pretrained(path)


def test_unexpected_tensor(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "m")
    edit_weights(path, lambda t: t.update({"backbone.layers.0.mixer.extra": np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match="unexpected tensor 'backbone.layers.0.mixer.extra'"):
        mr.MambaEncoder.from_pretrained(path)


def test_tensor_of_a_layer_beyond_config(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "m")
    edit_weights(path, lambda t: t.update({"backbone.layers.7.mixer.D": np.zeros(48, np.float32)}))
    with pytest.raises(ValueError, match="layers.7.mixer.D"):
        mr.MambaEncoder.from_pretrained(path)


def test_bias_present_when_config_says_none(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "m")
    edit_weights(path, lambda t: t.update({"backbone.layers.0.mixer.in_proj.bias": np.zeros(96, np.float32)}))
    with pytest.raises(ValueError, match="in_proj.bias"):
        mr.MambaEncoder.from_pretrained(path)


def test_wrong_shape(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "m")
    edit_weights(path, lambda t: t.update({"backbone.layers.0.mixer.D": np.zeros(47, np.float32)}))
    with pytest.raises(ValueError, match=r"layers.0.mixer.D.*shape \(47\), expected \(48\)"):
        mr.MambaEncoder.from_pretrained(path)


def test_wrong_dtype(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "m")
    edit_weights(path, lambda t: t.update({"backbone.layers.0.mixer.D": np.zeros(48, np.int32)}))
    with pytest.raises(ValueError, match="dtype I32"):
        mr.MambaEncoder.from_pretrained(path)


def test_truncated_weights(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "m")
    file = os.path.join(path, "model.safetensors")
    size = os.path.getsize(file)
    with open(file, "r+b") as f:
        f.truncate(size - 100)
    with pytest.raises(ValueError, match="truncated"):
        mr.MambaEncoder.from_pretrained(path)


def test_truncated_header(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "m")
    with open(os.path.join(path, "model.safetensors"), "r+b") as f:
        f.truncate(20)
    with pytest.raises(ValueError, match="truncated"):
        mr.MambaEncoder.from_pretrained(path)


def test_no_weights(tiny_model_dir, tmp_path):
    path = copy_model(tiny_model_dir, tmp_path / "m")
    os.remove(os.path.join(path, "model.safetensors"))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        mr.MambaEncoder.from_pretrained(path)


@pytest.fixture
def encoder(tiny_model_dir):
    return mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=1)


def test_token_id_out_of_range(encoder):
    with pytest.raises(ValueError, match="token id 300 .* outside the vocabulary"):
        encoder.encode([[1, 2, 300]])


def test_negative_token_id(encoder):
    with pytest.raises(ValueError, match="token id -1"):
        encoder.encode([[-1, 2]])


def test_token_id_beyond_int32(encoder):
    with pytest.raises(ValueError, match="int32"):
        encoder.encode([[2 ** 40]])


def test_non_int_token(encoder):
    with pytest.raises(TypeError, match="ints"):
        encoder.encode([[1, 2.5]])


def test_empty_id_list(encoder):
    with pytest.raises(ValueError, match="no tokens"):
        encoder.encode([[]])


def test_core_wrong_dtype(encoder):
    with pytest.raises(TypeError, match="int32"):
        encoder.model.forward(np.array([1, 2], np.int64), np.array([0, 2], np.int64))


def test_core_wrong_layout(encoder):
    tokens = np.array([[1, 2], [3, 4]], np.int32).T.ravel(order="K")[::2]  # a strided view
    with pytest.raises(ValueError, match="contiguous"):
        encoder.model.forward(tokens, np.array([0, 2], np.int64))


def test_core_wrong_dims(encoder):
    with pytest.raises(ValueError, match="1 dimension"):
        encoder.model.forward(np.zeros((1, 2), np.int32), np.array([0, 2], np.int64))


def test_core_bad_offsets(encoder):
    tokens = np.array([1, 2, 3], np.int32)
    with pytest.raises(ValueError, match="offsets end at 2 but there are 3 tokens"):
        encoder.model.forward(tokens, np.array([0, 2], np.int64))
    with pytest.raises(ValueError, match="non-decreasing"):
        encoder.model.forward(tokens, np.array([0, 2, 1, 3], np.int64))
    with pytest.raises(ValueError, match="start at 0"):
        encoder.model.forward(tokens, np.array([1, 3], np.int64))
    with pytest.raises(ValueError, match="at least one entry"):
        encoder.model.forward(tokens, np.array([], np.int64))


@pytest.mark.parametrize("max_tokens", [0, -5])
def test_max_tokens_not_positive(tiny_model_dir, max_tokens):
    with pytest.raises(ValueError, match="max_tokens"):
        mr.MambaEncoder.from_pretrained(tiny_model_dir, max_tokens=max_tokens)
    enc = mr.MambaEncoder.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="max_tokens"):
        enc.model.forward(np.array([1], np.int32), np.array([0, 1], np.int64), max_tokens=max_tokens)


def test_bad_threads(tiny_model_dir):
    with pytest.raises(ValueError, match="threads"):
        mr.MambaEncoder.from_pretrained(tiny_model_dir, threads=0)


@pytest.mark.parametrize("keyword", ["stream", "out", "out_row"])
def test_forward_keyword_of_the_gpu_model_only_is_a_type_error(encoder, keyword):
    # one parser serves Model and CudaModel: a keyword the host model does not take is refused, not ignored
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{keyword}'"):
        encoder.model.forward(np.array([1], np.int32), np.array([0, 1], np.int64), **{keyword: 1})


def test_forward_argument_types(encoder):
    tokens, offsets = np.array([1], np.int32), np.array([0, 1], np.int64)
    with pytest.raises(TypeError, match="pooling"):
        encoder.model.forward(tokens, offsets, pooling=1)
    with pytest.raises(TypeError):
        encoder.model.forward(tokens, offsets, max_tokens="8")
    with pytest.raises(ValueError, match="convert_to"):
        encoder.model.forward(tokens, offsets, convert_to="list")
    with pytest.raises(TypeError):
        encoder.model.forward(tokens)  # offsets are required


def test_unknown_pooling(encoder):
    with pytest.raises(ValueError, match="pooling"):
        encoder.model.forward(np.array([1], np.int32), np.array([0, 1], np.int64), pooling="max")


def test_unknown_keyword(encoder):
    with pytest.raises(TypeError):
        encoder.encode(["x"], not_an_argument=True)


def test_text_without_tokenizer(encoder):
    with pytest.raises(ValueError, match="no tokenizer.json"):
        encoder.encode("some text")


def test_model_used_before_finish():
    model = _C.Model({"hidden_size": 4, "num_hidden_layers": 1, "vocab_size": 10, "intermediate_size": 8,
                      "state_size": 2, "conv_kernel": 2, "time_step_rank": 1, "layer_norm_epsilon": 1e-5})
    with pytest.raises(RuntimeError, match="not complete"):
        model.forward(np.array([1], np.int32), np.array([0, 1], np.int64))
    with pytest.raises(ValueError, match="unknown tensor kind"):
        model.set_tensor("nonsense", 0, np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        model.set_tensor("norm_f.weight", 0, np.zeros(4, np.float64))


def test_empty_batch(encoder):
    out = encoder.model.forward(np.array([], np.int32), np.array([0], np.int64))
    assert out.shape == (0, 24) and out.dtype == np.float32
    assert encoder.encode([]).shape == (0, 24)


def test_released_checkpoint_pages_still_read_back(tiny_model_dir):
    """Loading hands each tensor's mapped file pages back once copied; a view kept past that
    still reads the file's values (the pages fault back in)."""
    from mambaret.arch.weights import iter_weights

    expected = load_file(os.path.join(tiny_model_dir, "model.safetensors"))
    kept = []
    for name, tensor in iter_weights(tiny_model_dir):
        tensor.copied()
        kept.append((name, tensor.array))
    assert kept
    for name, array in kept:
        np.testing.assert_array_equal(array, expected[name])


@pytest.mark.parametrize("choice", ["/no/such/libblas.so", "not-a-blas", "libc.so.6"])
def test_bad_blas_variable_warns_and_falls_back(choice):
    """A MAMBARET_BLAS that cannot be used does not break `import mambaret` (nor the CLI)."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, MAMBARET_BLAS=choice, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = "import mambaret; print(mambaret.show_config(print_out=False)['blas'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert f"MAMBARET_BLAS={choice!r} cannot be used" in done.stderr
    assert done.stdout.strip() == mr.show_config(print_out=False)["blas"]
    with pytest.raises(RuntimeError):  # asked for by name in code, it is still an error
        mr.configure_blas(choice)
    assert mr.show_config(print_out=False)["blas"] == done.stdout.strip()


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weight_names_the_tensor(tiny_model_dir, tmp_path, dtype, bad):
    import torch
    from safetensors.torch import load_file as load_torch, save_file as save_torch

    path = copy_model(tiny_model_dir, tmp_path / "m")
    file = os.path.join(path, "model.safetensors")
    tensors = {k: v.to(getattr(torch, dtype)) for k, v in load_torch(file).items()}
    tensors["backbone.layers.0.mixer.x_proj.weight"][3, 1] = bad
    save_torch(tensors, file, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"tensor 'backbone.layers.0.mixer.x_proj.weight' holds 1 NaN or infinite value:"):
        mr.MambaEncoder.from_pretrained(path)


def test_random_bytes_in_the_data_section_are_caught(tiny_model_dir, tmp_path):
    """Bytes overwritten in the middle of the weights: the corrupt tensor is named, not encoded to NaN."""
    path = copy_model(tiny_model_dir, tmp_path / "m")
    file = os.path.join(path, "model.safetensors")
    tensors = load_file(file)
    with open(file, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_len))
    name = "backbone.layers.0.mixer.in_proj.weight"
    begin, end = header[name]["data_offsets"]
    noise = np.random.default_rng(3).integers(0, 256, size=min(4096, end - begin), dtype=np.uint8).tobytes()
    assert not np.isfinite(np.frombuffer(noise[:len(noise) // 4 * 4], np.float32)).all()  # the noise holds a NaN/inf
    with open(file, "r+b") as f:
        f.seek(8 + header_len + begin)
        f.write(noise)
    assert tensors[name].size * 4 == end - begin
    with pytest.raises(ValueError, match=f"tensor '{name}' holds .* NaN or infinite"):
        mr.MambaEncoder.from_pretrained(path)


@pytest.mark.parametrize("vocab_size", [200, 400])
def test_vocab_size_disagreeing_with_the_embedding_warns(tiny_model_dir, tmp_path, vocab_size):
    path = copy_model(tiny_model_dir, tmp_path / "m")
    edit_config(path, vocab_size=vocab_size)
    with pytest.warns(UserWarning, match=f"vocab_size {vocab_size} but the embedding has 300 rows"):
        enc = mr.MambaEncoder.from_pretrained(path, threads=1)
    assert enc.encode([299]).shape == (24,)  # the tensor's rows are what counts


@pytest.mark.parametrize("config", [{"vocab_size": 50277}, {"vocab_size": 50280},
                                    {"vocab_size": 50271, "pad_vocab_size_multiple": 20}])
def test_vocab_padded_as_mamba_ssm_does_loads_quietly(tmp_path, config):
    """The hub's Mamba checkpoints say vocab_size 50277 and hold 50280 rows (padded to a multiple of 8)."""
    import warnings

    from mambaret.arch.random_model import write_random_model

    path = write_random_model(str(tmp_path / "m"), seed=1, hidden_size=8, num_hidden_layers=1, vocab_size=50280,
                              state_size=4)
    edit_config(path, **config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mr.MambaEncoder.from_pretrained(path, threads=1)
