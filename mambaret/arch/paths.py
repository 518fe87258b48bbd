"""Where a model lives: the name "default" (the packaged model, mambaret.DEFAULT_MODEL), a local
folder, or a hub id.

Everywhere a model directory is expected, the name ``"default"`` means the packaged folder
unless a path named ``default`` exists (an existing path always wins).
"""
from __future__ import annotations

import os

from ..models import DEFAULT_MODEL

DEFAULT_NAME = "default"

_HUB_FILES = ["config.json", "model.safetensors", "model.safetensors.index.json", "*.safetensors",
              "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "modules.json",
              "config_sentence_transformers.json", "*/config.json"]


def resolve_model_path(name_or_path):
    """``DEFAULT_MODEL`` for the name "default" when no such path exists; anything else as given."""
    if isinstance(name_or_path, (str, os.PathLike)):
        text = os.fspath(name_or_path)
        if text == DEFAULT_NAME and not os.path.exists(text):
            return DEFAULT_MODEL
    return name_or_path


def find_model_dir(name_or_path: str, revision: str | None, cache_dir: str | None) -> str:
    """A local model folder: a path, "default" (the packaged model), or a hub id fetched with
    huggingface_hub."""
    name_or_path = resolve_model_path(name_or_path)  # "default": the packaged model, unless ./default exists
    if os.path.isdir(name_or_path):
        return name_or_path
    if os.path.exists(name_or_path):
        raise ValueError(f"{name_or_path!r} is a file; pass the checkpoint directory")
    if name_or_path.count("/") != 1 or name_or_path.startswith((".", "/")):
        raise FileNotFoundError(f"no model directory {name_or_path!r}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"no directory {name_or_path!r}; to fetch it from the hub install huggingface_hub "
                                f"(pip install huggingface_hub, or pip install '.[hub]' in the mambaret "
                                f"repository)") from None
    return snapshot_download(name_or_path, revision=revision, cache_dir=cache_dir, allow_patterns=_HUB_FILES)


def resolve_model_dir(path: str) -> str:
    """The checkpoint folder of an HF folder or of a sentence-transformers folder ("default":
    the packaged default model, unless a path of that name exists)."""
    from .st_folder import is_sentence_transformers_folder, read_folder

    path = resolve_model_path(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no model directory {path!r}")
    if is_sentence_transformers_folder(path):
        path = read_folder(path).checkpoint_dir
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path!r} has no config.json: not a model directory")
    return path
