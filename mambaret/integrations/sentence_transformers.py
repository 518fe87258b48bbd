"""sentence-transformers model folders written from a MambaEncoder (mambaret.arch.st_folder reads
them back).

The folder is the usual layout that `SentenceTransformer(folder)` loads:

    modules.json                      Transformer (path "") -> 1_Pooling -> 2_Normalize
    config.json, model.safetensors    the Mamba checkpoint as HF `MambaModel` (float32)
    tokenizer.json                    ours, with a post-processor that appends EOS, so the
    tokenizer_config.json             tokenization transformers does equals ours
    sentence_bert_config.json         max_seq_length
    1_Pooling/config.json             last-token (or mean) pooling
    2_Normalize/                      L2 normalisation
    config_sentence_transformers.json prompts, default prompt, cosine similarity

Writing needs neither sentence-transformers, torch nor transformers.
"""
from __future__ import annotations

import json
import os

import numpy as np

from .._atomic import give_default_mode
from ..arch.config import TRANSFORMERS_CLASSES, read_config, transformers_config
from ..arch.weights import core_tensor, hf_name, iter_weights
from ..arch.st_folder import _LEGACY_POOLING_KEYS, _POOLING_TO_ST, NORMALIZE_TYPE, POOLING_TYPE, TRANSFORMER_TYPE


# ------------------------------------------------------------------------------------------
# writing

def _as_float32(tensor) -> np.ndarray:
    array = tensor.array
    if tensor.bfloat16:  # bf16 bits are the top half of a float32: widening is exact
        return (array.astype(np.uint32) << 16).view(np.float32)
    return np.ascontiguousarray(array, dtype=np.float32)


def _checkpoint_config(model_dir: str, vocab_rows: int, eos_id: int) -> dict:
    dims = read_config(model_dir)
    if dims.source_format == "transformers":
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    else:  # mamba_ssm's config: restate it in transformers' terms
        config = transformers_config(dims, vocab_rows)
        config.update(bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    config["architectures"] = [TRANSFORMERS_CLASSES[dims.arch]]
    config["vocab_size"] = vocab_rows  # transformers sizes the embedding from it
    config.pop("dtype", None)
    config["torch_dtype"] = "float32"
    return config


def _write_weights(model_dir: str, path: str) -> int:
    """Writes the backbone as float32 under MambaModel's names; returns the embedding rows."""
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    arch = read_config(model_dir).arch
    for name, tensor in iter_weights(model_dir):
        target = core_tensor(name, arch)
        if target is not None:
            tensors[hf_name(*target)] = _as_float32(tensor)
    if "embeddings.weight" not in tensors:
        raise ValueError(f"{model_dir}: the checkpoint has no embedding tensor")
    partial = path + ".partial"
    save_file(tensors, partial, metadata={"format": "pt"})
    give_default_mode(partial)
    os.replace(partial, path)
    return int(tensors["embeddings.weight"].shape[0])


def _write_tokenizer(encoder, folder: str) -> str:
    return write_eos_tokenizer(encoder.tokenizer, folder, encoder.max_length)


def write_eos_tokenizer(text_tokenizer, folder: str, max_length: int | None = None) -> str:
    """tokenizer.json with a post-processor that appends EOS (and tokenizer_config.json), so
    that the tokenization transformers and sentence-transformers do equals ours. Returns the
    EOS token. Our own tokenization asks for no special tokens, so it reads the file alike."""
    from tokenizers import Tokenizer, processors

    tokenizer = Tokenizer.from_str(text_tokenizer.tokenizer.to_str())
    eos_id = text_tokenizer.eos_token_id
    eos = tokenizer.id_to_token(eos_id)
    if eos is None:
        raise ValueError(f"the tokenizer has no token for the EOS id {eos_id}")
    append_eos = processors.TemplateProcessing(single=f"$A:0 {eos}:0", pair=f"$A:0 {eos}:0 $B:1 {eos}:1",
                                               special_tokens=[(eos, eos_id)])
    previous = tokenizer.post_processor
    # keep a post-processor that only fixes offsets (ByteLevel); one that adds tokens would add
    # tokens we never add (or EOS twice), so it goes
    if previous is not None and previous.num_special_tokens_to_add(False) == 0:
        append_eos = processors.Sequence([previous, append_eos])
    tokenizer.post_processor = append_eos
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.save(os.path.join(folder, "tokenizer.json"))
    # a tokenizer_config.json already there (copied with the tokenizer) keeps its other tokens
    config_path = os.path.join(folder, "tokenizer_config.json")
    tokenizer_config = {}
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as f:
            loaded = json.load(f)
        tokenizer_config = loaded if isinstance(loaded, dict) else {}
    # the generic fast class keeps tokenizer.json's post-processor as written
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config["eos_token"] = eos
    tokenizer_config.setdefault("bos_token", eos)
    tokenizer_config.setdefault("pad_token", eos)
    # right padding: the real last token is where the attention mask last reads 1
    tokenizer_config["padding_side"] = "right"
    tokenizer_config.setdefault("clean_up_tokenization_spaces", False)
    if max_length is not None:
        tokenizer_config["model_max_length"] = max_length
    _dump(config_path, tokenizer_config)
    return eos


def _dump(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_module_files(folder: str, *, hidden_size: int, pooling: str = "last", normalize: bool = True,
                       max_seq_length: int | None = None, prompts: dict[str, str] | None = None,
                       default_prompt_name: str | None = None, weights_dtype: str = "float32") -> None:
    """The sentence-transformers files of a model folder whose checkpoint and tokenizer sit at
    its root: modules.json (Transformer -> Pooling -> Normalize), 1_Pooling/config.json,
    2_Normalize/config.json, sentence_bert_config.json and config_sentence_transformers.json.
    With them `SentenceTransformer(folder)` pools and normalises as mambaret does (the
    tokenizer must append EOS itself: see write_eos_tokenizer). weights_dtype: the checkpoint's;
    anything but float32 is widened when transformers loads it, as our core computes in float32."""
    from .. import __version__

    transformer_config: dict = {"max_seq_length": max_seq_length, "do_lower_case": False}
    if weights_dtype != "float32":
        transformer_config["model_args"] = {"dtype": "float32"}
    _dump(os.path.join(folder, "sentence_bert_config.json"), transformer_config)

    os.makedirs(os.path.join(folder, "1_Pooling"), exist_ok=True)
    mode = _POOLING_TO_ST[pooling]
    pooling_config = {"word_embedding_dimension": hidden_size}
    pooling_config.update({key: name == mode for key, name in _LEGACY_POOLING_KEYS.items()})
    pooling_config["include_prompt"] = True
    _dump(os.path.join(folder, "1_Pooling", "config.json"), pooling_config)

    modules = [{"idx": 0, "name": "0", "path": "", "type": TRANSFORMER_TYPE},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": POOLING_TYPE}]
    if normalize:
        os.makedirs(os.path.join(folder, "2_Normalize"), exist_ok=True)
        # sentence-transformers 6 writes this file; it also keeps the folder in version control
        _dump(os.path.join(folder, "2_Normalize", "config.json"), {})
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": NORMALIZE_TYPE})
    _dump(os.path.join(folder, "modules.json"), modules)

    _dump(os.path.join(folder, "config_sentence_transformers.json"), {
        "__version__": {"mambaret": __version__},
        "model_type": "SentenceTransformer",
        "prompts": dict(prompts or {}),
        "default_prompt_name": default_prompt_name,
        "similarity_fn_name": "cosine",
    })


def export(encoder, folder: str, *, normalize: bool = True, overwrite: bool = False) -> str:
    """Writes `encoder` as a sentence-transformers model folder and returns its path.

    The checkpoint is re-read from the encoder's model directory and written in float32 under
    transformers' MambaModel names (bf16 and fp16 widen exactly), so transformers computes
    what our CPU core computes. normalize=True adds the 2_Normalize module (retrieval models
    carry it). Prompts, the default prompt and max_length go along. A folder that already holds
    files is refused unless overwrite=True (then the files of the same names are replaced).
    """
    if encoder.model_dir is None:
        raise ValueError("this encoder was not loaded from a directory; nothing to export")
    if encoder.tokenizer is None:
        raise ValueError("exporting needs a tokenizer (the model directory has no tokenizer.json)")
    folder = os.fspath(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"{folder!r} exists and is not a directory")
    if os.path.isdir(folder) and os.path.samefile(folder, encoder.model_dir):
        raise ValueError("cannot export into the directory the encoder was loaded from")
    if os.path.isdir(folder) and os.listdir(folder) and not overwrite:
        raise FileExistsError(f"{folder!r} is not empty; export into a new or empty folder, or pass overwrite=True")
    os.makedirs(folder, exist_ok=True)

    eos_id = encoder.tokenizer.eos_token_id
    vocab_rows = _write_weights(encoder.model_dir, os.path.join(folder, "model.safetensors"))
    _dump(os.path.join(folder, "config.json"), _checkpoint_config(encoder.model_dir, vocab_rows, eos_id))
    _write_tokenizer(encoder, folder)
    write_module_files(folder, hidden_size=encoder.dims.hidden_size, pooling=encoder.pooling, normalize=normalize,
                       max_seq_length=encoder.max_length, prompts=encoder.prompts,
                       default_prompt_name=encoder.default_prompt_name)
    return folder
