"""sentence-transformers folders: written by export, read by from_pretrained and by
SentenceTransformer, with the same embeddings; malformed folders rejected."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

import mambaret as mr
from mambaret.integrations.sentence_transformers import export
from mambaret.arch.st_folder import read_folder
from mambaret.arch.random_model import write_random_model

PROMPTS = {"query": "query: ", "document": "passage: "}
TEXTS = ["hello world", "Mamba encoders read left to right, so the last token sees the whole text.",
         "x", "检索增强生成", "The quick brown fox jumps over the lazy dog."]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer_json):
    return write_random_model(str(tmp_path_factory.mktemp("ckpt")), seed=5, hidden_size=32, num_hidden_layers=2,
                              state_size=4, tokenizer_json=str(tokenizer_json))


@pytest.fixture(scope="module")
def encoder(checkpoint):
    return mr.MambaEncoder.from_pretrained(checkpoint, threads=1, prompts=PROMPTS)


@pytest.fixture(scope="module")
def folder(encoder, tmp_path_factory):
    return export(encoder, str(tmp_path_factory.mktemp("st") / "model"))


def _json(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as f:
        return json.load(f)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_export_writes_the_sentence_transformers_layout(folder, encoder):
    modules = _json(folder, "modules.json")
    assert [(m["path"], m["type"].rsplit(".", 1)[-1]) for m in modules] == [
        ("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    pooling = _json(folder, "1_Pooling", "config.json")
    assert pooling["pooling_mode_lasttoken"] is True
    assert not any(v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_lasttoken")
    assert pooling["word_embedding_dimension"] == 32
    assert os.path.isdir(os.path.join(folder, "2_Normalize"))
    config = _json(folder, "config_sentence_transformers.json")
    assert config["prompts"] == PROMPTS and config["default_prompt_name"] is None
    assert config["similarity_fn_name"] == "cosine"
    hf_config = _json(folder, "config.json")
    assert hf_config["architectures"] == ["MambaModel"] and hf_config["vocab_size"] == 50280
    assert _json(folder, "tokenizer_config.json")["padding_side"] == "right"


def test_exported_tokenizer_appends_eos_like_ours(folder, encoder):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    assert [e.ids for e in tokenizer.encode_batch(TEXTS)] == encoder.tokenize(TEXTS)
    assert tokenizer.encode("hello world").ids[-1] == 0  # <|endoftext|>
    # without special tokens the file is the plain tokenizer: ours must not add EOS twice
    assert tokenizer.encode("hello world", add_special_tokens=False).ids == encoder.tokenize(["hello world"])[0][:-1]


def test_from_pretrained_reads_the_folder(folder, encoder):
    loaded = mr.MambaEncoder.from_pretrained(folder, threads=1)
    assert loaded.pooling == "last" and loaded.normalize is True
    assert loaded.prompts == PROMPTS and loaded.default_prompt_name is None and loaded.max_length is None
    np.testing.assert_allclose(loaded.encode(TEXTS), _unit(encoder.encode(TEXTS)), rtol=0, atol=1e-6)
    np.testing.assert_allclose(loaded.encode_query(TEXTS), _unit(encoder.encode_query(TEXTS)), rtol=0, atol=1e-6)
    assert not np.allclose(loaded.encode_query(TEXTS), loaded.encode(TEXTS), atol=1e-3)  # the prompt mattered


def test_explicit_arguments_override_the_folder(folder):
    loaded = mr.MambaEncoder.from_pretrained(folder, pooling="mean", normalize=False, prompts={}, max_length=4)
    assert (loaded.pooling, loaded.normalize, loaded.prompts, loaded.max_length) == ("mean", False, {}, 4)


def test_max_length_falls_back_to_the_tokenizer_config(folder, tmp_path):
    path = _copy_folder(folder, tmp_path / "m")
    _edit(os.path.join(path, "sentence_bert_config.json"), lambda c: c.pop("max_seq_length"))
    _edit(os.path.join(path, "tokenizer_config.json"), lambda c: c.update(model_max_length=7))
    assert mr.MambaEncoder.from_pretrained(path).max_length == 7
    _edit(os.path.join(path, "tokenizer_config.json"), lambda c: c.update(model_max_length=int(1e30)))
    assert mr.MambaEncoder.from_pretrained(path).max_length is None


def test_mean_pooling_max_length_and_no_normalize_round_trip(checkpoint, tmp_path):
    source = mr.MambaEncoder.from_pretrained(checkpoint, threads=1, pooling="mean", max_length=6,
                                             prompts={"query": "q: "}, default_prompt_name="query")
    export(source, str(tmp_path), normalize=False)
    assert [m["path"] for m in _json(tmp_path, "modules.json")] == ["", "1_Pooling"]
    loaded = mr.MambaEncoder.from_pretrained(str(tmp_path), threads=1)
    assert (loaded.pooling, loaded.normalize, loaded.max_length, loaded.default_prompt_name) == ("mean", False, 6, "query")
    with pytest.warns(UserWarning, match="truncated"):
        expected = source.encode(TEXTS)
    with pytest.warns(UserWarning, match="truncated"):
        np.testing.assert_allclose(loaded.encode(TEXTS), expected, rtol=0, atol=1e-6)


def _write_bf16_copy(src: str, dst: str) -> None:
    """The same checkpoint with every tensor rounded to bfloat16 (written by hand: NumPy has no bf16)."""
    from safetensors.numpy import load_file

    os.makedirs(dst, exist_ok=True)
    for name in ("config.json", "tokenizer.json"):
        with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as g:
            g.write(f.read())
    header, blobs, offset = {}, [], 0
    for name, array in load_file(os.path.join(src, "model.safetensors")).items():
        bits = (np.ascontiguousarray(array, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(array.shape), "data_offsets": [offset, offset + len(bits)]}
        blobs.append(bits)
        offset += len(bits)
    head = json.dumps(header).encode()
    with open(os.path.join(dst, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_bfloat16_checkpoint_exports_as_exact_float32(checkpoint, tmp_path):
    from safetensors.numpy import load_file

    _write_bf16_copy(checkpoint, str(tmp_path / "bf16"))
    source = mr.MambaEncoder.from_pretrained(str(tmp_path / "bf16"), threads=1)
    export(source, str(tmp_path / "st"))
    weights = load_file(str(tmp_path / "st" / "model.safetensors"))
    assert all(w.dtype == np.float32 for w in weights.values())
    assert "embeddings.weight" in weights and not any(k.startswith("backbone.") for k in weights)
    loaded = mr.MambaEncoder.from_pretrained(str(tmp_path / "st"), threads=1)
    # the same float32 weights and the same normalisation arithmetic (the core's): bit for bit
    np.testing.assert_array_equal(loaded.encode(TEXTS), source.encode(TEXTS, normalize_embeddings=True))


def test_causal_lm_checkpoint_exports_the_backbone(tmp_path, tokenizer_json):
    pytest.importorskip("transformers")
    import shutil

    from conftest import build_hf_model, save_hf_model

    model = build_hf_model(dict(hidden_size=32, num_hidden_layers=2, state_size=4, vocab_size=50280,
                                tie_word_embeddings=False), seed=2, causal_lm=True)
    path = save_hf_model(model, tmp_path / "hf")
    shutil.copyfile(tokenizer_json, os.path.join(path, "tokenizer.json"))
    source = mr.MambaEncoder.from_pretrained(path, threads=1)
    export(source, str(tmp_path / "st"))
    from safetensors.numpy import load_file

    names = set(load_file(str(tmp_path / "st" / "model.safetensors")))
    assert "embeddings.weight" in names and not any(n.startswith(("lm_head", "backbone.")) for n in names)
    loaded = mr.MambaEncoder.from_pretrained(str(tmp_path / "st"), threads=1)
    np.testing.assert_allclose(loaded.encode(TEXTS), _unit(source.encode(TEXTS)), rtol=0, atol=1e-6)


def test_mamba_ssm_checkpoint_exports_a_transformers_config(checkpoint, tmp_path):
    from safetensors.numpy import load_file, save_file

    ssm = tmp_path / "ssm"
    ssm.mkdir()
    weights = load_file(os.path.join(checkpoint, "model.safetensors"))
    weights["backbone.embedding.weight"] = weights.pop("backbone.embeddings.weight")
    save_file(weights, str(ssm / "model.safetensors"))
    (ssm / "config.json").write_text(json.dumps({"d_model": 32, "n_layer": 2, "vocab_size": 50277,
                                                 "ssm_cfg": {"d_state": 4}, "pad_vocab_size_multiple": 8}))
    with open(os.path.join(checkpoint, "tokenizer.json"), "rb") as f:
        (ssm / "tokenizer.json").write_bytes(f.read())
    source = mr.MambaEncoder.from_pretrained(str(ssm), threads=1)
    export(source, str(tmp_path / "st"))
    config = _json(tmp_path / "st", "config.json")
    assert config["model_type"] == "mamba" and config["hidden_size"] == 32 and config["state_size"] == 4
    assert config["vocab_size"] == 50280 and config["expand"] == 2 and config["eos_token_id"] == 0
    loaded = mr.MambaEncoder.from_pretrained(str(tmp_path / "st"), threads=1)
    assert loaded.dims.source_format == "transformers"
    np.testing.assert_allclose(loaded.encode(TEXTS), _unit(source.encode(TEXTS)), rtol=0, atol=1e-6)
    np.testing.assert_allclose(loaded.encode(TEXTS), mr.MambaEncoder.from_pretrained(checkpoint, threads=1,
                               normalize=True).encode(TEXTS), rtol=0, atol=1e-6)


# -- against sentence-transformers ----------------------------------------------------------

@pytest.fixture(scope="module")
def sentence_transformers():
    return pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed "
                               "(pip install 'mambaret[st]')")


def test_sentence_transformer_matches_ours(sentence_transformers, folder):
    model = sentence_transformers.SentenceTransformer(folder, device="cpu")
    ours = mr.MambaEncoder.from_pretrained(folder, threads=1)
    # one padded batch of mixed lengths: last-token pooling must find each real last token
    theirs = model.encode(TEXTS, batch_size=len(TEXTS), convert_to_numpy=True)
    assert np.abs(theirs - ours.encode(TEXTS)).max() < 1e-4
    theirs = model.encode(TEXTS, prompt_name="query", batch_size=2)
    assert np.abs(theirs - ours.encode_query(TEXTS)).max() < 1e-4
    assert np.abs(model.encode("x") - ours.encode("x")).max() < 1e-4


def test_sentence_transformer_matches_ours_with_mean_pooling_and_truncation(sentence_transformers, checkpoint,
                                                                            tmp_path):
    source = mr.MambaEncoder.from_pretrained(checkpoint, threads=1, pooling="mean", max_length=6)
    export(source, str(tmp_path), normalize=False)
    model = sentence_transformers.SentenceTransformer(str(tmp_path), device="cpu")
    assert model.max_seq_length == 6
    with pytest.warns(UserWarning, match="truncated"):
        ours = source.encode(TEXTS)
    assert np.abs(model.encode(TEXTS, batch_size=len(TEXTS)) - ours).max() < 1e-4


def test_folder_saved_by_sentence_transformers_reads_back(sentence_transformers, folder, tmp_path):
    model = sentence_transformers.SentenceTransformer(folder, device="cpu")
    model.save(str(tmp_path))  # its own writer, in whatever format this version uses
    ours = mr.MambaEncoder.from_pretrained(str(tmp_path), threads=1)
    assert ours.pooling == "last" and ours.normalize and ours.prompts == PROMPTS
    assert np.abs(model.encode(TEXTS, batch_size=3) - ours.encode(TEXTS)).max() < 1e-4


def test_truncating_folder_saved_by_sentence_transformers_reads_back(sentence_transformers, checkpoint, tmp_path):
    source = mr.MambaEncoder.from_pretrained(checkpoint, threads=1, pooling="mean", max_length=6)
    export(source, str(tmp_path / "ours"), normalize=False)
    model = sentence_transformers.SentenceTransformer(str(tmp_path / "ours"), device="cpu")
    model.max_seq_length = 4
    model.save(str(tmp_path / "theirs"))
    ours = mr.MambaEncoder.from_pretrained(str(tmp_path / "theirs"), threads=1)
    assert (ours.pooling, ours.normalize, ours.max_length) == ("mean", False, 4)
    with pytest.warns(UserWarning, match="truncated"):
        expected = ours.encode(TEXTS)
    assert np.abs(model.encode(TEXTS, batch_size=len(TEXTS)) - expected).max() < 1e-4


# -- bad input ------------------------------------------------------------------------------

def _copy_folder(folder, dst):
    import shutil

    shutil.copytree(folder, dst)
    return str(dst)


def _edit(path, change):
    with open(path, encoding="utf-8") as f:
        obj = json.load(f)
    obj = change(obj) or obj
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def test_unsupported_modules_are_rejected(folder, tmp_path):
    path = _copy_folder(folder, tmp_path / "m")
    _edit(os.path.join(path, "modules.json"),
          lambda m: m.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}))
    with pytest.raises(ValueError, match="Dense"):
        mr.MambaEncoder.from_pretrained(path)


@pytest.mark.parametrize("pooling, message", [
    ({"word_embedding_dimension": 32, "pooling_mode_cls_token": True}, "cls"),
    ({"embedding_dimension": 32, "pooling_mode": ["lasttoken", "mean"]}, "lasttoken"),
    ({"embedding_dimension": 32, "pooling_mode": "mean", "include_prompt": False}, "include_prompt"),
    ({"embedding_dimension": 32, "pooling_mode": 3}, "pooling_mode"),
])
def test_unsupported_pooling_is_rejected(folder, tmp_path, pooling, message):
    path = _copy_folder(folder, tmp_path / "m")
    with open(os.path.join(path, "1_Pooling", "config.json"), "w") as f:
        json.dump(pooling, f)
    with pytest.raises(ValueError, match=message):
        mr.MambaEncoder.from_pretrained(path)


def test_new_style_pooling_config_is_read(folder, tmp_path):
    path = _copy_folder(folder, tmp_path / "m")
    with open(os.path.join(path, "1_Pooling", "config.json"), "w") as f:
        json.dump({"embedding_dimension": 32, "pooling_mode": "mean"}, f)
    assert read_folder(path).pooling == "mean"


def test_malformed_files_are_named(folder, tmp_path):
    path = _copy_folder(folder, tmp_path / "m")
    with open(os.path.join(path, "modules.json"), "w") as f:
        f.write("[{")
    with pytest.raises(ValueError, match="modules.json"):
        mr.MambaEncoder.from_pretrained(path)
    path = _copy_folder(folder, tmp_path / "p")
    os.remove(os.path.join(path, "1_Pooling", "config.json"))
    with pytest.raises(FileNotFoundError, match="Pooling"):
        mr.MambaEncoder.from_pretrained(path)
    path = _copy_folder(folder, tmp_path / "c")
    _edit(os.path.join(path, "config_sentence_transformers.json"), lambda c: c.update(default_prompt_name="nope"))
    with pytest.raises(ValueError, match="nope"):
        mr.MambaEncoder.from_pretrained(path)
    path = _copy_folder(folder, tmp_path / "s")
    _edit(os.path.join(path, "sentence_bert_config.json"), lambda c: c.update(max_seq_length=0))
    with pytest.raises(ValueError, match="max_seq_length"):
        mr.MambaEncoder.from_pretrained(path)


def test_module_paths_must_stay_inside_the_folder(folder, tmp_path):
    path = _copy_folder(folder, tmp_path / "m")
    _edit(os.path.join(path, "modules.json"), lambda m: m[0].update(path="../elsewhere"))
    with pytest.raises(ValueError, match="inside the folder"):
        mr.MambaEncoder.from_pretrained(path)


def test_transformer_in_a_subfolder(folder, tmp_path):
    import shutil

    path = _copy_folder(folder, tmp_path / "m")
    sub = os.path.join(path, "0_Transformer")
    os.makedirs(sub)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "sentence_bert_config.json"):
        shutil.move(os.path.join(path, name), os.path.join(sub, name))
    _edit(os.path.join(path, "modules.json"), lambda m: m[0].update(path="0_Transformer"))
    loaded = mr.MambaEncoder.from_pretrained(path, threads=1)
    assert loaded.model_dir == sub
    np.testing.assert_allclose(loaded.encode(TEXTS), mr.MambaEncoder.from_pretrained(folder).encode(TEXTS), atol=1e-6)


def test_export_refuses_what_it_cannot_write(encoder, checkpoint, tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="loaded from"):
        export(encoder, checkpoint)
    no_tokenizer = mr.MambaEncoder.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="tokenizer"):
        export(no_tokenizer, str(tmp_path / "a"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        export(encoder, str(tmp_path / "file"))


def test_top_level_name(folder):
    assert mr.export_sentence_transformers is export
