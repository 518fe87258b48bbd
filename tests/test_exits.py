"""Layer exits and Matryoshka truncation at inference (mambaret.arch.exits): the C engine's exit
against transformers' hidden states and mambaret.nn, the full depth and width bit for bit as
before, exit heads read from a folder, and the bad inputs."""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import mambaret as mr
from mambaret import _C
from mambaret.arch.random_model import write_random_model

N_LAYER, D = 3, 32


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_random_model(str(tmp_path_factory.mktemp("exits")), seed=11, hidden_size=D, num_hidden_layers=N_LAYER,
                              vocab_size=200, state_size=4)


def _ids(seed=0, count=5):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 200, size=int(rng.integers(3, 40))).tolist() for _ in range(count)]


def _with_heads(src: str, dst: str, heads: dict, config: dict | None = None) -> str:
    """A copy of a model folder whose model.safetensors also holds `heads` (name -> array)."""
    os.makedirs(dst, exist_ok=True)
    tensors = load_file(os.path.join(src, "model.safetensors"))
    tensors.update(heads)
    save_file(tensors, os.path.join(dst, "model.safetensors"))
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(config or {})
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f)
    return dst


def _rms(x, gain, eps=1e-5):
    x = np.asarray(x, np.float64)
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * gain


def test_full_depth_and_width_are_bit_identical(model_dir):
    enc = mr.MambaEncoder.from_pretrained(model_dir, threads=1)
    ids = _ids()
    for normalize in (False, True):
        today = enc.encode(ids, normalize_embeddings=normalize)
        both = enc.encode(ids, normalize_embeddings=normalize, exit_layer=N_LAYER, truncate_dim=D)
        assert np.array_equal(today, both)
    assert np.array_equal(enc.encode(ids, output_value="token_embeddings")[1],
                          enc.encode(ids, output_value="token_embeddings", exit_layer=N_LAYER)[1])
    full = mr.MambaEncoder.from_pretrained(model_dir, threads=1, exit_layer=N_LAYER, truncate_dim=D)
    assert np.array_equal(full.encode(ids), enc.encode(ids))


def test_exit_is_the_block_output_through_the_final_norm_as_in_transformers(model_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.MambaModel.from_pretrained(model_dir).eval()
    gain = hf.norm_f.weight.detach().double().numpy()
    enc = mr.MambaEncoder.from_pretrained(model_dir, threads=1, max_tokens=16)  # exits across micro-batches
    ids = _ids(1)
    for k in range(1, N_LAYER + 1):
        ours = enc.encode(ids, exit_layer=k)
        for row, x in zip(ours, ids):
            with torch.no_grad():
                states = hf(torch.tensor([x]), output_hidden_states=True).hidden_states
            # Mamba-1 has no embedding entry: hidden_states[k - 1] is block k's output (the last
            # entry is already through norm_f)
            ref = _rms(states[k - 1][0, -1].double().numpy(), gain) if k < N_LAYER else states[-1][0, -1].numpy()
            np.testing.assert_allclose(row, ref, rtol=2e-5, atol=2e-5)
    tokens = enc.encode(ids, output_value="token_embeddings", exit_layer=2)
    with torch.no_grad():
        states = hf(torch.tensor([ids[0]]), output_hidden_states=True).hidden_states
    np.testing.assert_allclose(tokens[0], _rms(states[1][0].double().numpy(), gain), rtol=2e-5, atol=2e-5)


def test_exit_matches_nn_and_a_shipped_head_replaces_the_final_gain(model_dir, tmp_path):
    torch = pytest.importorskip("torch")
    from mambaret.nn import MambaModel, last_token_embeddings, offsets_from_lengths

    head = (1.0 + 0.3 * np.random.default_rng(2).standard_normal(D)).astype(np.float16)
    folder = _with_heads(model_dir, str(tmp_path / "heads"), {"backbone.exits.1.weight": head})
    enc = mr.MambaEncoder.from_pretrained(folder, threads=1)
    plain = mr.MambaEncoder.from_pretrained(model_dir, threads=1)
    ids = _ids(3)
    nn_model = MambaModel.from_pretrained(folder).eval()
    assert torch.equal(nn_model.exits["1"].weight, torch.from_numpy(head.astype(np.float32)))
    offsets = offsets_from_lengths([len(x) for x in ids])
    tokens = torch.tensor([t for x in ids for t in x])
    for k in (1, 2):
        with torch.no_grad():
            ref = last_token_embeddings(nn_model.forward_packed(tokens, offsets, exit_layer=k), offsets).numpy()
        np.testing.assert_allclose(enc.encode(ids, exit_layer=k), ref, rtol=1e-5, atol=1e-5)
    # exit 1 uses the head, exit 2 (no head) the final norm's gain, as the model without heads
    head_1, plain_1 = enc.encode(ids, exit_layer=1), plain.encode(ids, exit_layer=1)
    gain = load_file(os.path.join(model_dir, "model.safetensors"))["backbone.norm_f.weight"]
    np.testing.assert_allclose(head_1, plain_1 / gain * head.astype(np.float32), rtol=1e-5, atol=1e-6)
    assert np.array_equal(enc.encode(ids, exit_layer=2), plain.encode(ids, exit_layer=2))
    assert np.array_equal(enc.encode(ids), plain.encode(ids))
    # the layer states the training losses read, through exit_norm, are the same exits
    states = nn_model.layer_states_packed(tokens, offsets, [1, 3])
    assert sorted(states) == [1, 3]
    with torch.no_grad():
        via_states = last_token_embeddings(nn_model.exit_norm(states[1], 1), offsets).numpy()
    np.testing.assert_allclose(via_states, head_1, rtol=1e-5, atol=1e-5)
    # a saved nn model keeps its head and the engine reads it back
    nn_model.save_pretrained(str(tmp_path / "saved"))
    again = mr.MambaEncoder.from_pretrained(str(tmp_path / "saved"), threads=1, tokenizer_path=None)
    np.testing.assert_allclose(again.encode(ids, exit_layer=1), head_1, rtol=1e-6, atol=1e-6)


def test_truncate_dim_keeps_the_first_dims_then_normalises(model_dir):
    enc = mr.MambaEncoder.from_pretrained(model_dir, threads=1)
    ids = _ids(4)
    full = enc.encode(ids)
    cut = enc.encode(ids, truncate_dim=8)
    assert cut.shape == (len(ids), 8) and np.array_equal(cut, full[:, :8])
    normed = enc.encode(ids, truncate_dim=8, normalize_embeddings=True, exit_layer=2)
    raw = enc.encode(ids, exit_layer=2)[:, :8]
    np.testing.assert_allclose(normed, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, rtol=1e-6)
    small = mr.MambaEncoder.from_pretrained(model_dir, threads=1, truncate_dim=8)
    assert small.get_sentence_embedding_dimension() == small.embedding_dim == 8
    assert np.array_equal(small.encode(ids), cut)
    assert small.encode(ids[0]).shape == (8,)
    assert small.encode(ids, truncate_dim=16).shape == (len(ids), 16)  # a call's value wins


def test_engine_forward_takes_exit_layer_for_every_pooling(model_dir):
    enc = mr.MambaEncoder.from_pretrained(model_dir, threads=1)
    model = enc.model
    ids = _ids(5)
    tokens = np.array([t for x in ids for t in x], np.int32)
    offsets = np.cumsum([0] + [len(x) for x in ids]).astype(np.int64)
    every = model.forward(tokens, offsets, pooling="all", exit_layer=2)
    last = model.forward(tokens, offsets, pooling="last", exit_layer=2)
    mean = model.forward(tokens, offsets, pooling="mean", exit_layer=2)
    np.testing.assert_allclose(last, every[offsets[1:] - 1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(mean[1], every[offsets[1]:offsets[2]].mean(0), rtol=1e-5, atol=1e-6)
    assert np.array_equal(model.forward(tokens, offsets, exit_layer=None), model.forward(tokens, offsets))
    for bad in (0, -1, N_LAYER + 1):
        with pytest.raises(ValueError, match="exit_layer"):
            model.forward(tokens, offsets, exit_layer=bad)
    for bad in ("2", 2.0, True):
        with pytest.raises(ValueError, match="exit_layer"):
            model.forward(tokens, offsets, exit_layer=bad)


@pytest.mark.parametrize("bad", [0, D + 1, -3, 8.0, "8", True])
def test_bad_truncate_dim_is_a_value_error_naming_it(model_dir, bad):
    enc = mr.MambaEncoder.from_pretrained(model_dir, threads=1)
    with pytest.raises(ValueError, match="truncate_dim"):
        enc.encode(_ids(), truncate_dim=bad)
    with pytest.raises(ValueError, match="truncate_dim"):
        mr.MambaEncoder.from_pretrained(model_dir, truncate_dim=bad)


@pytest.mark.parametrize("bad", [0, N_LAYER + 1, -1, 1.0, "1", False])
def test_bad_exit_layer_is_a_value_error_naming_it(model_dir, bad):
    enc = mr.MambaEncoder.from_pretrained(model_dir, threads=1)
    with pytest.raises(ValueError, match="exit_layer"):
        enc.encode(_ids(), exit_layer=bad)
    with pytest.raises(ValueError, match="exit_layer"):
        mr.MambaEncoder.from_pretrained(model_dir, exit_layer=bad)


def test_exit_head_of_the_wrong_length_or_layer_is_a_value_error_naming_the_tensor(model_dir, tmp_path):
    short = _with_heads(model_dir, str(tmp_path / "short"), {"exits.2.weight": np.ones(D - 1, np.float32)})
    with pytest.raises(ValueError, match=r"exits\.2\.weight"):
        mr.MambaEncoder.from_pretrained(short)
    flat = _with_heads(model_dir, str(tmp_path / "flat"), {"exits.1.weight": np.ones((2, D), np.float32)})
    with pytest.raises(ValueError, match=r"exits\.1\.weight"):
        mr.MambaEncoder.from_pretrained(flat)
    last = _with_heads(model_dir, str(tmp_path / "last"), {"exits.3.weight": np.ones(D, np.float32)})
    with pytest.raises(ValueError, match=r"exits\.3\.weight"):
        mr.MambaEncoder.from_pretrained(last)
    pytest.importorskip("torch")
    from mambaret.nn import MambaModel

    for folder, name in ((short, r"exits\.2\.weight"), (flat, r"exits\.1\.weight"), (last, r"exits\.3\.weight")):
        with pytest.raises(ValueError, match=name):
            MambaModel.from_pretrained(folder)
    model = _C.Model({"hidden_size": 4, "num_hidden_layers": 2, "vocab_size": 8, "intermediate_size": 8,
                      "state_size": 2, "conv_kernel": 2, "time_step_rank": 1, "layer_norm_epsilon": 1e-5})
    with pytest.raises(ValueError, match=r"exits\.1\.weight.*3 values"):
        model.set_exit_gain(1, np.ones(3, np.float32))


def test_untrained_values_warn_once_and_listed_ones_do_not(model_dir, tmp_path):
    folder = _with_heads(model_dir, str(tmp_path / "listed"), {},
                         {"matryoshka_dims": [32, 16], "exit_layers": [2, 3]})
    enc = mr.MambaEncoder.from_pretrained(folder, threads=1)
    assert enc.matryoshka_dims == (32, 16) and enc.exit_layers == (3, 2)
    ids = _ids()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.encode(ids, truncate_dim=16, exit_layer=2)
        enc.encode(ids, truncate_dim=D, exit_layer=N_LAYER)
    with pytest.warns(UserWarning, match=r"truncate_dim=8 .*matryoshka_dims: 32, 16"):
        enc.encode(ids, truncate_dim=8)
    with pytest.warns(UserWarning, match=r"exit_layer=1 .*exit_layers: 3, 2"):
        enc.encode(ids, exit_layer=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.encode(ids, truncate_dim=8, exit_layer=1)  # once per value
    bad = _with_heads(model_dir, str(tmp_path / "badlist"), {}, {"matryoshka_dims": [64]})
    with pytest.raises(ValueError, match="matryoshka_dims"):
        mr.MambaEncoder.from_pretrained(bad)


def test_cli_takes_truncate_dim_and_exit_layer(tmp_path, capsys):
    from train_support import write_tiny_model

    from mambaret.app.cli import main

    folder = write_tiny_model(str(tmp_path / "m"), seed=4, hidden_size=16, num_hidden_layers=2)
    corpus = tmp_path / "docs.txt"
    corpus.write_text("c1 c2 r3\nc4 r5 r6 c7\nc8\n")
    out = tmp_path / "emb.npy"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # untrained values warn; the warning is tested above
        assert main(["encode", folder, str(corpus), "-o", str(out), "--quiet", "--truncate-dim", "8",
                     "--exit-layer", "1", "--normalize"]) == 0
        enc = mr.MambaEncoder.from_pretrained(folder)
        ref = enc.encode(["c1 c2 r3", "c4 r5 r6 c7", "c8"], truncate_dim=8, exit_layer=1, normalize_embeddings=True)
    np.testing.assert_allclose(np.load(out), ref, rtol=1e-6, atol=1e-7)
    capsys.readouterr()
    assert main(["encode", folder, str(corpus), "--quiet", "--truncate-dim", "17"]) == 2
    assert "truncate_dim" in capsys.readouterr().err
    assert main(["encode", folder, str(corpus), "--quiet", "--exit-layer", "0"]) == 2
    assert "exit_layer" in capsys.readouterr().err


def test_mamba2_exit_is_hidden_states_k_through_the_final_norm(tmp_path):
    """The shared engine's exit on another architecture: transformers' Mamba2Model starts its
    hidden_states with the embedding output, so block k's output is hidden_states[k]."""
    torch = pytest.importorskip("torch")
    from conftest import build_hf_model, save_hf_model

    from mambaret.nn import MambaModel, last_token_embeddings, offsets_from_lengths

    cfg = dict(hidden_size=32, num_hidden_layers=3, vocab_size=60, num_heads=4, head_dim=16, n_groups=2,
               state_size=8, conv_kernel=4, expand=2, chunk_size=8)
    hf = build_hf_model(cfg, seed=3, family="mamba2")
    folder = save_hf_model(hf, tmp_path / "m2")
    enc = mr.MambaEncoder.from_pretrained(folder, threads=1, max_tokens=16)
    nn_model = MambaModel.from_pretrained(folder).eval()
    gain = hf.norm_f.weight.detach().double().numpy()
    rng = np.random.default_rng(0)
    ids = [rng.integers(0, 60, size=n).tolist() for n in (5, 23, 40)]
    offsets = offsets_from_lengths([len(x) for x in ids])
    tokens = torch.tensor([t for x in ids for t in x])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for k in (1, 2, 3):
            ours = enc.encode(ids, exit_layer=k)
            with torch.no_grad():
                via_nn = last_token_embeddings(nn_model.forward_packed(tokens, offsets, exit_layer=k), offsets).numpy()
            np.testing.assert_allclose(ours, via_nn, rtol=1e-4, atol=1e-5)
            for row, x in zip(ours, ids):
                with torch.no_grad():
                    states = hf(torch.tensor([x]), output_hidden_states=True).hidden_states
                ref = _rms(states[k][0, -1].double().numpy(), gain) if k < 3 else states[-1][0, -1].numpy()
                np.testing.assert_allclose(row, ref, rtol=1e-4, atol=1e-5)
