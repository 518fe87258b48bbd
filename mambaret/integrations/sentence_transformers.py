"""sentence-transformers model folders: written from a MambaEncoder and read back.

The folder is the usual layout that `SentenceTransformer(folder)` loads:

    modules.json                      Transformer (path "") -> 1_Pooling -> 2_Normalize
    config.json, model.safetensors    the Mamba checkpoint as HF `MambaModel` (float32)
    tokenizer.json                    ours, with a post-processor that appends EOS, so the
    tokenizer_config.json             tokenization transformers does equals ours
    sentence_bert_config.json         max_seq_length
    1_Pooling/config.json             last-token (or mean) pooling
    2_Normalize/                      L2 normalisation
    config_sentence_transformers.json prompts, default prompt, cosine similarity

Neither writing nor reading needs sentence-transformers, torch or transformers.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..checkpoint import _GLOBAL_TENSORS, _LAYER_TENSORS, core_tensor, iter_weights, read_config

TRANSFORMER_TYPE = "sentence_transformers.models.Transformer"
POOLING_TYPE = "sentence_transformers.models.Pooling"
NORMALIZE_TYPE = "sentence_transformers.models.Normalize"

# sentence-transformers' pooling names -> ours
_POOLING_FROM_ST = {"lasttoken": "last", "mean": "mean"}
_POOLING_TO_ST = {"last": "lasttoken", "mean": "mean"}
# the boolean keys every sentence-transformers version before 6 reads (6 still reads them)
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def is_sentence_transformers_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "modules.json"))


@dataclass
class SentenceTransformersFolder:
    """What a sentence-transformers folder tells MambaEncoder.from_pretrained."""

    checkpoint_dir: str
    pooling: str = "last"
    normalize: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    max_seq_length: int | None = None


def _read_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what}: no file {path!r}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def _module_kind(type_name: str) -> str:
    # "sentence_transformers.models.Pooling", or the module path newer versions write
    return type_name.rsplit(".", 1)[-1]


def _pooling_modes(config: dict, path: str) -> list[str]:
    mode = config.get("pooling_mode")
    if mode is not None:
        modes = [mode] if isinstance(mode, str) else list(mode) if isinstance(mode, (list, tuple)) else None
        if modes is None:
            raise ValueError(f"{path}: 'pooling_mode' must be a string or a list, got {mode!r}")
        return modes
    modes = [name for key, name in _LEGACY_POOLING_KEYS.items() if config.get(key)]
    return modes or ["mean"]  # sentence-transformers' default


def _tokenizer_max_length(transformer_dir: str) -> int | None:
    """model_max_length from tokenizer_config.json, where sentence-transformers 6 keeps
    max_seq_length (and where older versions look when sentence_bert_config.json has none)."""
    path = os.path.join(transformer_dir, "tokenizer_config.json")
    if not os.path.isfile(path):
        return None
    config = _read_json(path, "tokenizer")
    value = config.get("model_max_length") if isinstance(config, dict) else None
    # transformers writes int(1e30) for "no limit"
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 10**18:
        return None
    return value


def read_folder(folder: str) -> SentenceTransformersFolder:
    """Reads modules.json and the module configs of a sentence-transformers folder.

    Accepts a Transformer, then a Pooling with last-token or mean pooling, then optionally a
    Normalize; any other module would change the embedding in a way we do not reproduce, so it
    is an error rather than silently skipped.
    """
    modules_path = os.path.join(folder, "modules.json")
    modules = _read_json(modules_path, "sentence-transformers folder")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ValueError(f"{modules_path} must hold a list of module objects")
    modules = sorted(modules, key=lambda m: m.get("idx", 0))
    kinds = [_module_kind(str(m.get("type", ""))) for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        raise ValueError(f"{modules_path}: modules {kinds} are not supported; expected Transformer, Pooling "
                         f"and optionally Normalize")

    def module_dir(module: dict) -> str:
        sub = module.get("path", "")
        if not isinstance(sub, str) or os.path.isabs(sub) or ".." in sub.replace("\\", "/").split("/"):
            raise ValueError(f"{modules_path}: module path {sub!r} must be relative and inside the folder")
        return os.path.join(folder, sub) if sub else folder

    transformer_dir = module_dir(modules[0])
    settings = SentenceTransformersFolder(checkpoint_dir=transformer_dir, normalize=len(modules) == 3)

    st_config_path = os.path.join(transformer_dir, "sentence_bert_config.json")
    if os.path.isfile(st_config_path):
        st_config = _read_json(st_config_path, "Transformer module")
        if not isinstance(st_config, dict):
            raise ValueError(f"{st_config_path} must hold a JSON object")
        if st_config.get("do_lower_case"):
            raise ValueError(f"{st_config_path}: do_lower_case=true is not supported")
        max_seq_length = st_config.get("max_seq_length")
        if max_seq_length is not None:
            if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < 1:
                raise ValueError(f"{st_config_path}: max_seq_length must be a positive integer, got {max_seq_length!r}")
            settings.max_seq_length = max_seq_length

    if settings.max_seq_length is None:
        settings.max_seq_length = _tokenizer_max_length(transformer_dir)

    pooling_path = os.path.join(module_dir(modules[1]), "config.json")
    pooling_config = _read_json(pooling_path, "Pooling module")
    if not isinstance(pooling_config, dict):
        raise ValueError(f"{pooling_path} must hold a JSON object")
    modes = _pooling_modes(pooling_config, pooling_path)
    if len(modes) != 1 or modes[0] not in _POOLING_FROM_ST:
        raise ValueError(f"{pooling_path}: pooling {modes} is not supported; use 'lasttoken' or 'mean'")
    settings.pooling = _POOLING_FROM_ST[modes[0]]
    if settings.pooling == "mean" and pooling_config.get("include_prompt", True) is False:
        raise ValueError(f"{pooling_path}: mean pooling with include_prompt=false is not supported")

    config_path = os.path.join(folder, "config_sentence_transformers.json")
    if os.path.isfile(config_path):
        config = _read_json(config_path, "sentence-transformers folder")
        if not isinstance(config, dict):
            raise ValueError(f"{config_path} must hold a JSON object")
        prompts = config.get("prompts") or {}
        if not isinstance(prompts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()):
            raise ValueError(f"{config_path}: 'prompts' must map names to strings")
        settings.prompts = dict(prompts)
        default = config.get("default_prompt_name")
        if default is not None and default not in prompts:
            raise ValueError(f"{config_path}: default_prompt_name {default!r} is not one of the prompts {sorted(prompts)}")
        settings.default_prompt_name = default
    return settings


# ------------------------------------------------------------------------------------------
# writing

def _hf_name(kind: str, layer: int) -> str:
    """The name a bare `MambaModel.save_pretrained` gives a core tensor."""
    for name, target in _GLOBAL_TENSORS.items():
        if target == kind:
            return name
    for name, target in _LAYER_TENSORS.items():
        if target == kind:
            return f"layers.{layer}.{name}"
    raise ValueError(f"no checkpoint name for tensor kind {kind!r}")


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
    else:  # mamba_ssm's config: restate it in MambaConfig's terms
        expand = dims.intermediate_size / dims.hidden_size
        if expand != int(expand):
            raise ValueError(f"intermediate size {dims.intermediate_size} is not a multiple of hidden size "
                             f"{dims.hidden_size}; transformers' MambaConfig cannot express it")
        config = {
            "model_type": "mamba", "hidden_size": dims.hidden_size, "num_hidden_layers": dims.num_hidden_layers,
            "state_size": dims.state_size, "conv_kernel": dims.conv_kernel, "expand": int(expand),
            "intermediate_size": dims.intermediate_size, "time_step_rank": dims.time_step_rank,
            "layer_norm_epsilon": dims.layer_norm_epsilon, "use_bias": dims.use_bias,
            "use_conv_bias": dims.use_conv_bias, "residual_in_fp32": True,
            "bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": eos_id,
        }
    config["architectures"] = ["MambaModel"]
    config["vocab_size"] = vocab_rows  # transformers sizes the embedding from it
    config.pop("dtype", None)
    config["torch_dtype"] = "float32"
    return config


def _write_weights(model_dir: str, path: str) -> int:
    """Writes the backbone as float32 under MambaModel's names; returns the embedding rows."""
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    for name, tensor in iter_weights(model_dir):
        target = core_tensor(name)
        if target is not None:
            tensors[_hf_name(*target)] = _as_float32(tensor)
    if "embeddings.weight" not in tensors:
        raise ValueError(f"{model_dir}: the checkpoint has no embedding tensor")
    partial = path + ".partial"
    save_file(tensors, partial, metadata={"format": "pt"})
    os.replace(partial, path)
    return int(tensors["embeddings.weight"].shape[0])


def _write_tokenizer(encoder, folder: str) -> str:
    from tokenizers import Tokenizer, processors

    tokenizer = Tokenizer.from_str(encoder.tokenizer.tokenizer.to_str())
    eos_id = encoder.tokenizer.eos_token_id
    eos = tokenizer.id_to_token(eos_id)
    if eos is None:
        raise ValueError(f"the tokenizer has no token for the EOS id {eos_id}")
    append_eos = processors.TemplateProcessing(single=f"$A:0 {eos}:0", pair=f"$A:0 {eos}:0 $B:1 {eos}:1",
                                               special_tokens=[(eos, eos_id)])
    previous = tokenizer.post_processor
    # keep a post-processor that only fixes offsets (ByteLevel); one that adds tokens would add
    # tokens we never add, so it goes
    if previous is not None and previous.num_special_tokens_to_add(False) == 0:
        append_eos = processors.Sequence([previous, append_eos])
    tokenizer.post_processor = append_eos
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.save(os.path.join(folder, "tokenizer.json"))
    tokenizer_config = {
        # the generic fast class keeps tokenizer.json's post-processor as written
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": eos,
        "bos_token": eos,
        "pad_token": eos,
        # right padding: the real last token is where the attention mask last reads 1
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
    }
    if encoder.max_length is not None:
        tokenizer_config["model_max_length"] = encoder.max_length
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config, f, indent=2)
    return eos


def _dump(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def export(encoder, folder: str, *, normalize: bool = True) -> str:
    """Writes `encoder` as a sentence-transformers model folder and returns its path.

    The checkpoint is re-read from the encoder's model directory and written in float32 under
    transformers' MambaModel names (bf16 and fp16 widen exactly), so transformers computes
    what our CPU core computes. normalize=True adds the 2_Normalize module (retrieval models
    carry it). Prompts, the default prompt and max_length go along.
    """
    from .. import __version__

    if encoder.model_dir is None:
        raise ValueError("this encoder was not loaded from a directory; nothing to export")
    if encoder.tokenizer is None:
        raise ValueError("exporting needs a tokenizer (the model directory has no tokenizer.json)")
    folder = os.fspath(folder)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"{folder!r} exists and is not a directory")
    if os.path.isdir(folder) and os.path.samefile(folder, encoder.model_dir):
        raise ValueError("cannot export into the directory the encoder was loaded from")
    os.makedirs(folder, exist_ok=True)

    eos_id = encoder.tokenizer.eos_token_id
    vocab_rows = _write_weights(encoder.model_dir, os.path.join(folder, "model.safetensors"))
    _dump(os.path.join(folder, "config.json"), _checkpoint_config(encoder.model_dir, vocab_rows, eos_id))
    _write_tokenizer(encoder, folder)
    _dump(os.path.join(folder, "sentence_bert_config.json"),
          {"max_seq_length": encoder.max_length, "do_lower_case": False})

    os.makedirs(os.path.join(folder, "1_Pooling"), exist_ok=True)
    mode = _POOLING_TO_ST[encoder.pooling]
    pooling = {"word_embedding_dimension": encoder.dims.hidden_size}
    pooling.update({key: name == mode for key, name in _LEGACY_POOLING_KEYS.items()})
    pooling["include_prompt"] = True
    _dump(os.path.join(folder, "1_Pooling", "config.json"), pooling)

    modules = [{"idx": 0, "name": "0", "path": "", "type": TRANSFORMER_TYPE},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": POOLING_TYPE}]
    if normalize:
        os.makedirs(os.path.join(folder, "2_Normalize"), exist_ok=True)
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": NORMALIZE_TYPE})
    _dump(os.path.join(folder, "modules.json"), modules)

    _dump(os.path.join(folder, "config_sentence_transformers.json"), {
        "__version__": {"mambaret": __version__},
        "model_type": "SentenceTransformer",
        "prompts": dict(encoder.prompts),
        "default_prompt_name": encoder.default_prompt_name,
        "similarity_fn_name": "cosine",
    })
    return folder
