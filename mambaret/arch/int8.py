"""Int8 weights for the model (W8A8): quantizing a float checkpoint, the int8 folder format, and
handing the int8 linears to the C core (csrc/models/mr_quant.h).

in_proj and out_proj are int8 per output channel (symmetric, scale = max|row| / 127); the
activations are quantized per token on the fly by the C core. Each linear's input is rotated by
R = blockdiag(H_b) / sqrt(b) . diag(signs) (a Hadamard transform with random signs, b the largest
power of two dividing its input width): for out_proj, so that one outlier channel of the scan's
output no longer sets its token's whole scale; for in_proj, so that a few large weights of a row
no longer set the row's scale (the retrained default model's last in_proj has such rows; without
this rotation its int8 embeddings fell to cosine 0.961 on its own pairs). The rotation is folded
into the weight here (W R^T) and applied to the activations by the C core (a fast Walsh-Hadamard
transform). Everything else stays as the checkpoint has it and is computed in float32.

The same function quantizes on load and for `mambaret quantize`, so a saved folder gives exactly
the embeddings of quantizing on load: the scales and the signs are deterministic.

An int8 folder is a checkpoint folder whose config.json carries
`quantization_config = {"quant_method": "mambaret_int8", "base_model_type": "mamba", ...}` and the
model_type "mambaret_int8", which transformers' AutoConfig (and so sentence-transformers) does not
know and refuses, rather than load the model with its int8 linears missing (transformers skips a
quant_method it does not know); its safetensors hold, per layer,
`mixer.in_proj.qweight` / `mixer.out_proj.qweight` (I8), their `weight_scale` (F32) and
`mixer.{in_proj,out_proj}.input_rotation` (I8, +-1) in place of the float in_proj / out_proj
weights (format 1 folders rotate out_proj's input only, and still load).

Measured on the packaged default model (bench/results/int8.md): per-channel smoothing of the
in_proj input was not needed for the targets, so there is none; x_proj, dt_proj, the conv, the
scan, the norms and the embedding stay float32.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

import numpy as np

from .. import _C

QUANT_METHOD = "mambaret_int8"
FORMAT_VERSION = 2  # 2: in_proj's input is rotated too; version 1 folders (out_proj only) still load
READ_VERSIONS = (1, 2)
ROTATION_SEED = 0     # out_proj's input
IN_ROTATION_SEED = 1  # in_proj's input
LINEARS = ("mixer.in_proj.weight", "mixer.out_proj.weight")
_INT8_NAME = re.compile(r"^(?:backbone\.)?layers\.(\d+)\.mixer\.(in_proj|out_proj)\.(qweight|weight_scale|input_rotation)$")


def folder_config(model_dir: str) -> dict | None:
    """The quantization_config of an int8 folder, None for a float checkpoint; a ValueError for
    a quantization this library does not read."""
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None  # read_config reports a missing or broken config.json
    q = cfg.get("quantization_config") if isinstance(cfg, dict) else None
    if q is None:
        return None
    if not isinstance(q, dict) or q.get("quant_method") != QUANT_METHOD:
        method = q.get("quant_method") if isinstance(q, dict) else q
        raise ValueError(f"{path}: quantization_config names {method!r}; mambaret reads float checkpoints and "
                         f"its own int8 folders ('{QUANT_METHOD}')")
    if q.get("format_version") not in READ_VERSIONS:
        raise ValueError(f"{path}: int8 format_version {q.get('format_version')!r}, this mambaret reads "
                         f"{', '.join(map(str, READ_VERSIONS))}")
    for key in ("hadamard_block", "in_proj_hadamard_block"):
        block = q.get(key, 0)
        if not isinstance(block, int) or isinstance(block, bool) or block < 0:
            raise ValueError(f"{path}: quantization_config.{key} must be a non-negative integer, got {block!r}")
    return q


def int8_tensor(name: str) -> tuple[int, str, str] | None:
    """(layer, 'in_proj' | 'out_proj', part) for an int8 folder's own tensor names, else None."""
    m = _INT8_NAME.match(name)
    return (int(m.group(1)), m.group(2), m.group(3)) if m else None


def hadamard_block(intermediate_size: int) -> int:
    """The rotation's block: the largest power of two dividing intermediate_size."""
    return intermediate_size & -intermediate_size


def rotation_signs(layer: int, n: int, seed: int = ROTATION_SEED) -> np.ndarray:
    """Layer `layer`'s random signs, the same on every machine (NumPy's PCG64 stream)."""
    return np.where(np.random.default_rng([seed, layer]).random(n) < 0.5, -1, 1).astype(np.int8)


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: scale = max|row| / 127, q = round(w / scale) in [-127, 127]."""
    w = np.asarray(w, np.float32)
    m = np.abs(w).max(axis=1)
    scales = (m / np.float32(127)).astype(np.float32)
    inv = np.divide(np.float32(127), m, out=np.zeros_like(m), where=m > 0)
    q = np.clip(np.rint(w * inv[:, None]), -127, 127).astype(np.int8)
    return q, scales


def rotation_blocks(hidden_size: int, intermediate_size: int, rotate: bool = True) -> dict[str, int]:
    """The Hadamard block of each linear's input rotation (0 for none): in_proj reads hidden_size
    inputs, out_proj intermediate_size."""
    if not rotate:
        return {"in_proj": 0, "out_proj": 0}
    return {"in_proj": hadamard_block(hidden_size), "out_proj": hadamard_block(intermediate_size)}


def quantize_linears(in_proj: np.ndarray, out_proj: np.ndarray, layer: int,
                     blocks: dict[str, int]) -> dict[str, np.ndarray]:
    """One layer's int8 tensors from its float in_proj [N, d] and out_proj [d, E] weights, each
    input rotated with its block in `blocks` (rotation_blocks; 0: not rotated)."""
    tensors = {}
    seeds = {"in_proj": IN_ROTATION_SEED, "out_proj": ROTATION_SEED}
    for proj, w in (("in_proj", in_proj), ("out_proj", out_proj)):
        w = np.ascontiguousarray(w, np.float32)
        if blocks[proj]:  # W R^T: each row through the same rotation the C core applies to the activations
            signs = rotation_signs(layer, w.shape[1], seeds[proj])
            w = _C.op_hadamard(w, blocks[proj], signs)
            tensors[f"{proj}.input_rotation"] = signs
        tensors[f"{proj}.qweight"], tensors[f"{proj}.weight_scale"] = quantize_rows(w)
    return tensors


def _float32(tensor: Any) -> np.ndarray:
    """A LoadedTensor's values in float32 (bfloat16 arrives as its uint16 bits)."""
    a = tensor.array
    if tensor.bfloat16:
        return (a.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(a, np.float32)


ARCHITECTURES = ("mamba", "mamba2", "falcon_mamba")


def check_architecture(core_config: dict) -> None:
    arch = core_config.get("arch", "mamba")
    if arch not in ARCHITECTURES:
        raise ValueError(f"int8 weights run the architectures {', '.join(ARCHITECTURES)}, not {arch!r}")


def set_quantized(model: "_C.Model", layers: int, floats: dict[tuple[str, int], tuple[str, Any]],
                  intermediate_size: int, hidden_size: int) -> None:
    """Quantizes each layer's float in_proj / out_proj (as read from the checkpoint) into the model."""
    blocks = rotation_blocks(hidden_size, intermediate_size)
    for layer in range(layers):
        _set_layer(model, layer, quantize_linears(*_float_linears(floats, layer), layer, blocks), blocks)


def _float_linears(floats: dict[tuple[str, int], tuple[str, Any]], layer: int) -> list[np.ndarray]:
    """A layer's float in_proj and out_proj weights, checked and widened to float32."""
    pair = []
    for kind in LINEARS:
        if (kind, layer) not in floats:
            raise ValueError(f"missing tensor 'backbone.layers.{layer}.{kind}'")
        name, tensor = floats[(kind, layer)]
        tensor.check_finite(name)
        pair.append(_float32(tensor))
    return pair


def _set_layer(model, layer: int, t: dict[str, np.ndarray], blocks: dict[str, int],
               names: dict[str, str] | None = None) -> None:
    """One layer's int8 linears into the model; a ValueError names the checkpoint tensor (names:
    projection -> its qweight's name in the folder). blocks: projection -> its rotation's block."""
    for proj in ("in_proj", "out_proj"):
        rotation = t.get(f"{proj}.input_rotation")
        try:
            model.set_int8_linear(f"mixer.{proj}.weight", layer, t[f"{proj}.qweight"], t[f"{proj}.weight_scale"],
                                  rotation, blocks[proj] if rotation is not None else 0)
        except (ValueError, TypeError) as exc:
            where = f"tensor '{names[proj]}'" if names else f"quantizing layer {layer}"
            raise ValueError(f"{exc} ({where})") from None


def set_from_folder(model: "_C.Model", layers: int, found: dict[tuple[int, str, str], tuple[str, Any]],
                    intermediate_size: int, qconfig: dict, hidden_size: int) -> None:
    """Checks an int8 folder's tensors (present, dtype, shape, finite scales, rotations matching
    each linear's inputs) and hands them to the model; a ValueError names the tensor at fault."""
    blocks = {"out_proj": qconfig["hadamard_block"], "in_proj": qconfig.get("in_proj_hadamard_block", 0)}
    inputs = {"out_proj": ("intermediate_size", intermediate_size), "in_proj": ("hidden_size", hidden_size)}
    expected = {"qweight": np.int8, "weight_scale": np.float32, "input_rotation": np.int8}
    for (layer, proj, part), (name, tensor) in found.items():
        if layer >= layers:
            raise ValueError(f"unexpected tensor '{name}': the config has {layers} layers")
        if tensor.bfloat16 or tensor.array.dtype != expected[part]:
            got = "bfloat16" if tensor.bfloat16 else tensor.array.dtype
            raise ValueError(f"tensor '{name}' has dtype {got}, expected {np.dtype(expected[part])}")
        if part == "input_rotation" and not blocks[proj]:
            key = "hadamard_block" if proj == "out_proj" else "in_proj_hadamard_block"
            raise ValueError(f"unexpected tensor '{name}': the config's {key} is 0")
    for layer in range(layers):
        t = {}
        parts = [(proj, part) for proj in ("in_proj", "out_proj") for part in ("qweight", "weight_scale")]
        parts += [(proj, "input_rotation") for proj in ("in_proj", "out_proj") if blocks[proj]]
        for proj, part in parts:
            key = (layer, proj, part)
            if key not in found:
                raise ValueError(f"missing tensor 'backbone.layers.{layer}.mixer.{proj}.{part}' in the int8 folder")
            name, tensor = found[key]
            a = tensor.array
            if part == "weight_scale":
                if a.ndim != 1:
                    raise ValueError(f"tensor '{name}' must be 1-D, got shape {a.shape}")
                if not np.all(np.isfinite(a)) or np.any(a < 0):
                    raise ValueError(f"tensor '{name}' holds a NaN, infinite or negative scale: the folder is corrupt")
            field, size = inputs[proj]
            if part == "input_rotation" and a.shape != (size,):
                raise ValueError(f"tensor '{name}' has shape {a.shape}; the rotation must match {field} ({size},)")
            t[f"{proj}.{part}"] = np.ascontiguousarray(a)
        _set_layer(model, layer, t, blocks, {p: found[(layer, p, "qweight")][0] for p in ("in_proj", "out_proj")})
        for proj, part in parts:
            found[(layer, proj, part)][1].copied()


def save_quantized(model_dir: str, out_dir: str, rotate: bool = True) -> str:
    """Writes the int8 folder of a float checkpoint: config.json with quantization_config, the
    int8 model.safetensors, and the tokenizer and other small files as they are. Returns out_dir.
    rotate=False leaves out the Hadamard rotations (plain W8A8, for comparisons)."""
    from safetensors.numpy import save_file

    from .config import read_config
    from .weights import core_tensor, exit_head_layer, hf_name, iter_weights

    if folder_config(model_dir) is not None:
        raise ValueError(f"{model_dir!r} is already an int8 folder: quantize its float checkpoint instead")
    dims = read_config(model_dir)
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    check_architecture({"arch": dims.arch})
    if os.path.abspath(out_dir) == os.path.abspath(model_dir):
        raise ValueError("the int8 folder must be a different folder from the checkpoint")
    floats: dict[tuple[str, int], tuple[str, Any]] = {}
    tensors: dict[str, np.ndarray] = {}
    for name, tensor in iter_weights(model_dir):
        target = core_tensor(name, dims.arch)
        if target is None:
            if exit_head_layer(name) is not None:  # an exit's gain stays float, under its own name
                tensor.check_finite(name)
                tensors[name] = np.ascontiguousarray(_float32(tensor) if tensor.bfloat16 else tensor.array)
            continue
        kind, layer = target
        if kind in LINEARS:
            floats[target] = (name, tensor)
        else:
            tensor.check_finite(name)
            # float16 / float32 as stored; bfloat16 (uint16 bits here) widened, safetensors.numpy has no bf16
            value = _float32(tensor) if tensor.bfloat16 else tensor.array
            tensors[f"backbone.{hf_name(kind, layer)}"] = np.ascontiguousarray(value)
    blocks = rotation_blocks(dims.hidden_size, dims.intermediate_size, rotate)
    for layer in range(dims.num_hidden_layers):
        for key, value in quantize_linears(*_float_linears(floats, layer), layer, blocks).items():
            tensors[f"backbone.layers.{layer}.mixer.{key}"] = value
    os.makedirs(out_dir, exist_ok=True)
    for entry in sorted(os.listdir(model_dir)):  # tokenizer, model card, sentence-transformers modules
        src = os.path.join(model_dir, entry)
        if entry == "config.json" or entry.endswith((".safetensors", ".bin")) or entry.endswith(".index.json"):
            continue
        if os.path.isfile(src):
            shutil.copy2(src, os.path.join(out_dir, entry))
        elif os.path.isdir(src) and not entry.startswith("."):  # sentence-transformers' module folders
            shutil.copytree(src, os.path.join(out_dir, entry), dirs_exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "mambaret_int8"})
    cfg["quantization_config"] = {
        "quant_method": QUANT_METHOD,
        "base_model_type": cfg.get("model_type", dims.arch),
        "format_version": FORMAT_VERSION,
        "weights": "int8, symmetric, per output channel (in_proj, out_proj)",
        "activations": "int8, symmetric, per token, quantized on the fly",
        "hadamard_block": blocks["out_proj"],
        "in_proj_hadamard_block": blocks["in_proj"],
        "rotation_seed": ROTATION_SEED,
        "in_proj_rotation_seed": IN_ROTATION_SEED,
    }
    cfg["model_type"] = QUANT_METHOD
    cfg["architectures"] = ["MambaretInt8Model"]
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    return out_dir
