"""Helpers the adapters share."""
from __future__ import annotations

import inspect
import os


def load_encoder(model, model_kwargs: dict | None):
    """A MambaEncoder as given, or loaded from a path / hub id / "default" (the packaged model) with
    model_kwargs."""
    from ..encoding.encoder import MambaEncoder

    if isinstance(model, MambaEncoder):
        if model_kwargs:
            raise ValueError("model_kwargs apply when loading from a path, not to an already loaded MambaEncoder")
        return model
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        return MambaEncoder.from_pretrained(os.fsdecode(model), **(model_kwargs or {}))
    raise TypeError(f"model must be a MambaEncoder or a model path, got {type(model).__name__}")


def check_encode_kwargs(encoder, kwargs: dict | None, what: str) -> dict:
    """Fails at construction, naming the offending arguments, rather than at the first call."""
    kwargs = dict(kwargs or {})
    accepted = inspect.signature(encoder.encode).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(f"{what}: unknown encode() arguments {unknown}")
    return kwargs


def check_texts(texts) -> list:
    """The texts as a list, each checked to be a str (the frameworks pass lists of str)."""
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts must be str, item {i} is {type(text).__name__}")
    return texts
