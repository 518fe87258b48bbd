"""The packaged default retriever.

``DEFAULT_MODEL`` is the absolute path of ``mambaret/models/default``, an HF-format Mamba-1
folder (config.json, model.safetensors, tokenizer.json, ...) shipped inside the package, so it
loads offline. Everywhere a model directory is expected, the name ``"default"`` means this folder
unless a path named ``default`` exists (an existing path always wins).
"""
from __future__ import annotations

import os

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default")
DEFAULT_NAME = "default"

__all__ = ["DEFAULT_MODEL", "DEFAULT_NAME", "resolve_model_path"]


def resolve_model_path(name_or_path):
    """``DEFAULT_MODEL`` for the name "default" when no such path exists; anything else as given."""
    if isinstance(name_or_path, (str, os.PathLike)):
        text = os.fspath(name_or_path)
        if text == DEFAULT_NAME and not os.path.exists(text):
            return DEFAULT_MODEL
    return name_or_path
