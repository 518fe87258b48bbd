"""Builds the C core's model (Mamba-1, Mamba-2 or FalconMamba, as the config says) from a checkpoint folder (config.json and weights)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _C
from . import int8
from .._memory import check_allocation, model_weight_bytes
from .config import MambaDims, check_vocab_rows, read_config
from .weights import core_tensor, exit_head_layer, iter_weights, tensor_kinds, tensor_shape


def load_core_model(model_dir: str, dims: MambaDims | None = None,
                    quantize: str | None = None) -> tuple[_C.Model, MambaDims]:
    """Builds the C model from a checkpoint directory, checking every tensor name and shape.
    quantize="int8" quantizes in_proj / out_proj on load (arch/int8.py); an int8 folder is read
    as it is."""
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    dims = dims or read_config(model_dir)
    qconfig = int8.folder_config(model_dir)
    tensors: dict[tuple[str, int], tuple[str, Any]] = {}
    heads: dict[int, tuple[str, Any]] = {}  # exit heads by layer (1-based)
    int8_tensors: dict[tuple[int, str, str], tuple[str, Any]] = {}
    for name, tensor in iter_weights(model_dir):
        if qconfig is not None and int8.int8_tensor(name):
            int8_tensors[int8.int8_tensor(name)] = (name, tensor)
            continue
        target = core_tensor(name, dims.arch)
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
    config = dims.core_config(vocab_rows=int(embedding.shape[0]))
    check_allocation(model_weight_bytes(dims, int(embedding.shape[0])), "the model's weights")
    _check_shapes(tensors, config)  # from the headers: a wrong shape costs no allocation
    quantized = qconfig is not None or quantize == "int8"
    if quantized:
        int8.check_architecture(config)
        config["int8"] = 1
    model = _C.Model(config)
    for (kind, layer), (name, tensor) in tensors.items():
        if layer >= dims.num_hidden_layers:
            raise ValueError(f"unexpected tensor '{name}': the config has {dims.num_hidden_layers} layers")
        if quantized and kind in int8.LINEARS:
            if qconfig is not None:
                raise ValueError(f"unexpected tensor '{name}': an int8 folder holds it as qweight and weight_scale")
            continue  # quantized below
        if tensor.array.dtype == np.int8:
            raise ValueError(f"tensor '{name}' has dtype int8; expected float32, float16 or bfloat16")
        tensor.check_finite(name)  # here, so each tensor's pages are read once, then copied and released
        try:
            model.set_tensor(kind, layer, tensor.array, bfloat16=tensor.bfloat16)
        except ValueError as exc:
            raise ValueError(f"{exc} (checkpoint tensor '{name}')") from None
        tensor.copied()
    if qconfig is not None:
        int8.set_from_folder(model, dims.num_hidden_layers, int8_tensors, dims.intermediate_size, qconfig,
                             dims.hidden_size)
    elif quantized:
        int8.set_quantized(model, dims.num_hidden_layers, tensors, dims.intermediate_size, dims.hidden_size)
    for layer, (name, tensor) in sorted(heads.items()):
        tensor.check_finite(name)
        try:
            model.set_exit_gain(layer, tensor.array, bfloat16=tensor.bfloat16)
        except ValueError as exc:
            raise ValueError(f"{exc} (checkpoint tensor '{name}')") from None
        tensor.copied()
    model.finish()
    return model, dims


def _check_shapes(tensors: dict, config: dict) -> None:
    """ValueError naming the first checkpoint tensor whose shape the config does not give, and
    the dimension that disagrees (in the config's terms)."""
    kinds = tensor_kinds(config["arch"])
    for (kind, _layer), (name, tensor) in tensors.items():
        want = tensor_shape(kind, config)
        got = tuple(tensor.array.shape)
        if got != want:
            dims = ", ".join(f"{dim} = {size}" for dim, size in zip(kinds[kind]["dims"], want))
            raise ValueError(f"tensor '{name}' has shape ({', '.join(map(str, got))}), expected "
                             f"({', '.join(map(str, want))}) from the config ({dims})")
