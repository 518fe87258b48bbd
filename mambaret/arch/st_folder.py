"""Reading sentence-transformers model folders: which checkpoint, pooling, normalisation,
prompts and length limit a folder of this layout (written by `export_sentence_transformers`)
gives `MambaEncoder.from_pretrained`. It sits beside checkpoint loading; writing such folders is
in mambaret.integrations.sentence_transformers. Needs neither sentence-transformers nor torch.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

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
