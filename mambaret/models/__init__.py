"""The packaged default retriever.

``DEFAULT_MODEL`` is the absolute path of ``mambaret/models/default``, an HF-format Mamba-1
folder (config.json, model.safetensors, tokenizer.json, ...) shipped inside the package, so it
loads offline. Everywhere a model directory is expected, the name ``"default"`` means this folder
unless a path named ``default`` exists (an existing path always wins): see
mambaret/arch/paths.py.
"""
from __future__ import annotations

import os

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default")

__all__ = ["DEFAULT_MODEL"]
