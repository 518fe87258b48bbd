"""Builds the C core's Mamba-1 model from a checkpoint folder (config.json and weights)."""
from __future__ import annotations

from typing import Any

from .. import _C
from .._memory import check_allocation, model_weight_bytes
from .config import MambaDims, check_vocab_rows, read_config
from .weights import core_tensor, exit_head_layer, iter_weights


def load_core_model(model_dir: str, dims: MambaDims | None = None) -> tuple[_C.Model, MambaDims]:
    """Builds the C model from a checkpoint directory, checking every tensor name and shape."""
    dims = dims or read_config(model_dir)
    tensors: dict[tuple[str, int], tuple[str, Any]] = {}
    heads: dict[int, tuple[str, Any]] = {}  # exit heads by layer (1-based)
    for name, tensor in iter_weights(model_dir):
        target = core_tensor(name)
        if target is None:
            layer = exit_head_layer(name)
            if layer is not None:
                heads[layer] = (name, tensor)
            continue
        if target in tensors:
            raise ValueError(f"tensor '{name}' appears twice in the checkpoint (also as '{tensors[target][0]}')")
        tensors[target] = (name, tensor)
    if ("embeddings.weight", 0) not in tensors:
        raise ValueError("missing tensor 'backbone.embeddings.weight' (or 'backbone.embedding.weight')")
    embedding = tensors[("embeddings.weight", 0)][1].array
    if embedding.ndim != 2:
        raise ValueError(f"tensor '{tensors[('embeddings.weight', 0)][0]}' must be 2-D, got shape {embedding.shape}")
    if embedding.shape[1] != dims.hidden_size:
        raise ValueError(f"tensor '{tensors[('embeddings.weight', 0)][0]}' has {embedding.shape[1]} columns, "
                         f"the config's hidden_size is {dims.hidden_size}")
    check_vocab_rows(dims, int(embedding.shape[0]), model_dir)
    check_allocation(model_weight_bytes(dims, int(embedding.shape[0])), "the model's weights")
    model = _C.Model(dims.core_config(vocab_rows=int(embedding.shape[0])))
    for (kind, layer), (name, tensor) in tensors.items():
        if layer >= dims.num_hidden_layers:
            raise ValueError(f"unexpected tensor '{name}': the config has {dims.num_hidden_layers} layers")
        tensor.check_finite(name)  # here, so each tensor's pages are read once, then copied and released
        try:
            model.set_tensor(kind, layer, tensor.array, bfloat16=tensor.bfloat16)
        except ValueError as exc:
            raise ValueError(f"{exc} (checkpoint tensor '{name}')") from None
        tensor.copied()
    for layer, (name, tensor) in sorted(heads.items()):
        tensor.check_finite(name)
        try:
            model.set_exit_gain(layer, tensor.array, bfloat16=tensor.bfloat16)
        except ValueError as exc:
            raise ValueError(f"{exc} (checkpoint tensor '{name}')") from None
        tensor.copied()
    model.finish()
    return model, dims
