"""Depth and width on demand: layer exits and Matryoshka dims, read the same way by every entry
point (MambaEncoder, mambaret.nn, the CLI).

Exit k (1-based, 1..n_layer) is the output of the k-th block, at the last token, through an RMS
norm whose gain is the exit's own head (`exits.{k}.weight` in model.safetensors, length d) when the
model ships one, else the final norm's weight; exit n_layer is the model's usual embedding. The
engine stops after block k, so an exit costs k / n_layer of the layers' work.

transformers' `output_hidden_states` index the same states differently by architecture:
- Mamba-1 (`MambaModel`): no embedding entry; `hidden_states[k - 1]` is block k's output for
  k < n_layer, and the last entry is already through the final norm.
- Mamba-2 (`Mamba2Model`): entry 0 is the embedding output; `hidden_states[k]` is block k's
  output for k < n_layer, and the last entry is through the final norm.
In both the exit applies the norm itself: exit k = RMSNorm(block k's output) * gain.

A model's config.json may list what it was trained for: `matryoshka_dims` (widths that
`truncate_dim` keeps well) and `exit_layers`. Other values work; each warns once per encoder.
"""
from __future__ import annotations

import json
import os
import warnings


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_truncate_dim(value, hidden_size: int) -> int | None:
    """None, or an int in 1..hidden_size; anything else is a ValueError naming truncate_dim."""
    if value is None:
        return None
    if not _is_int(value) or not 1 <= value <= hidden_size:
        raise ValueError(f"truncate_dim must be an int in 1..{hidden_size} (the embedding's size) or None, "
                         f"got {value!r}")
    return int(value)


def check_exit_layer(value, n_layer: int) -> int | None:
    """None, or an int in 1..n_layer; anything else is a ValueError naming exit_layer."""
    if value is None:
        return None
    if not _is_int(value) or not 1 <= value <= n_layer:
        raise ValueError(f"exit_layer must be an int in 1..{n_layer} (the model's layers, counted from 1) or None, "
                         f"got {value!r}")
    return int(value)


def _int_list(cfg: dict, key: str, low: int, high: int, path: str) -> tuple[int, ...]:
    value = cfg.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(_is_int(v) and low <= v <= high for v in value):
        raise ValueError(f"{path}: '{key}' must be a list of ints in {low}..{high}, got {value!r}")
    return tuple(sorted(set(value), reverse=True))


def trained_exits(model_dir: str | None, hidden_size: int, n_layer: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(matryoshka_dims, exit_layers) that config.json lists, largest first; () for each it does not."""
    if model_dir is None:
        return (), ()
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return (), ()  # the loader has already read (and checked) this file
    if not isinstance(cfg, dict):
        return (), ()
    return (_int_list(cfg, "matryoshka_dims", 1, hidden_size, path),
            _int_list(cfg, "exit_layers", 1, n_layer, path))


class UntrainedWarnings:
    """Warns once per value when a truncate_dim or exit_layer is not one the model lists as trained
    (the full width and the last layer always are)."""

    def __init__(self, dims: tuple[int, ...], layers: tuple[int, ...], hidden_size: int, n_layer: int):
        self.dims, self.layers = set(dims) | {hidden_size}, set(layers) | {n_layer}
        self.listed_dims, self.listed_layers = dims, layers
        self.seen: set[tuple[str, int]] = set()

    def check(self, truncate_dim: int | None, exit_layer: int | None, stacklevel: int = 3) -> None:
        for name, value, trained, listed, key in (
                ("truncate_dim", truncate_dim, self.dims, self.listed_dims, "matryoshka_dims"),
                ("exit_layer", exit_layer, self.layers, self.listed_layers, "exit_layers")):
            if value is None or value in trained or (name, value) in self.seen:
                continue
            self.seen.add((name, value))
            known = ", ".join(map(str, listed)) if listed else "none listed"
            warnings.warn(f"{name}={value} is not one this model was trained for (config.json {key}: {known}); "
                          f"it works, but its embeddings may be weaker", UserWarning, stacklevel=stacklevel)
