"""Reads Mamba-1 checkpoints: HF transformers and original mamba_ssm configs, and weights from
safetensors (single or sharded) or pytorch_model.bin.

safetensors files are read here rather than through the safetensors package because NumPy has
no bfloat16: we hand bf16 tensors to the C core as their uint16 bit patterns, which it widens.
The reader checks the header against the file so a truncated or corrupt file is a ValueError.
"""
from __future__ import annotations

import functools
import json
import math
import mmap
import os
import re
import struct
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from . import _C

# mamba_ssm's names for tensors whose transformers name is in the C core's table
_ALIASES = {"embedding.weight": "embeddings.weight"}
_LAYER_NAME = re.compile(r"^layers\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class MambaDims:
    """The dimensions the C core needs, whatever config format they came from."""

    hidden_size: int
    num_hidden_layers: int
    vocab_size: int  # from config; the embedding tensor's row count wins at load time
    intermediate_size: int
    state_size: int
    conv_kernel: int
    time_step_rank: int
    layer_norm_epsilon: float
    use_bias: bool
    use_conv_bias: bool
    eos_token_id: int | None
    source_format: str  # "transformers" or "mamba_ssm"
    pad_vocab_size_multiple: int = 8  # mamba_ssm pads the embedding rows to a multiple of this

    def core_config(self, vocab_rows: int) -> dict:
        return {
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "vocab_size": vocab_rows,
            "intermediate_size": self.intermediate_size,
            "state_size": self.state_size,
            "conv_kernel": self.conv_kernel,
            "time_step_rank": self.time_step_rank,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "use_bias": self.use_bias,
            "use_conv_bias": self.use_conv_bias,
        }


def _int_field(cfg: dict, key: str, default=None, where="config.json") -> int:
    value = cfg.get(key, default)
    if value is None:
        raise ValueError(f"{where} is missing '{key}'")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where}: '{key}' must be a positive integer, got {value!r}")
    return value


def _dt_rank(value, hidden_size: int, where: str) -> int:
    if value in (None, "auto"):
        return math.ceil(hidden_size / 16)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where}: time step rank must be 'auto' or a positive integer, got {value!r}")
    return value


def _expand_size(cfg: dict, hidden: int, expand_key: str, size_key: str | None, where: str) -> int:
    expand = cfg.get(expand_key, 2)
    if isinstance(expand, bool) or not isinstance(expand, (int, float)) or not 0 < expand < 1 << 22:
        raise ValueError(f"{where}: '{expand_key}' must be a positive number, got {expand!r}")
    if size_key and cfg.get(size_key) is not None:
        return _int_field(cfg, size_key, where=where)
    return int(expand * hidden)


def parse_config(cfg: dict, where: str = "config.json") -> MambaDims:
    """Reads a HF MambaConfig dict or an original mamba_ssm config dict."""
    if not isinstance(cfg, dict):
        raise ValueError(f"{where} must hold a JSON object")
    if "d_model" in cfg and "hidden_size" not in cfg:
        return _parse_mamba_ssm(cfg, where)
    model_type = cfg.get("model_type", "mamba")
    if model_type != "mamba":
        raise ValueError(f"{where}: model_type '{model_type}' is not supported (only Mamba-1, 'mamba')")
    hidden = _int_field(cfg, "hidden_size", where=where)
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"{where}: 'layer_norm_epsilon' must be a non-negative number, got {eps!r}")
    return MambaDims(
        hidden_size=hidden,
        num_hidden_layers=_int_field(cfg, "num_hidden_layers", where=where),
        vocab_size=_int_field(cfg, "vocab_size", 50280, where=where),
        intermediate_size=_expand_size(cfg, hidden, "expand", "intermediate_size", where),
        state_size=_int_field(cfg, "state_size", 16, where=where),
        conv_kernel=_int_field(cfg, "conv_kernel", 4, where=where),
        time_step_rank=_dt_rank(cfg.get("time_step_rank", "auto"), hidden, where),
        layer_norm_epsilon=float(eps),
        use_bias=bool(cfg.get("use_bias", False)),
        use_conv_bias=bool(cfg.get("use_conv_bias", True)),
        eos_token_id=cfg.get("eos_token_id") if isinstance(cfg.get("eos_token_id"), int) else None,
        source_format="transformers",
        pad_vocab_size_multiple=_pad_multiple(cfg),
    )


def _parse_mamba_ssm(cfg: dict, where: str) -> MambaDims:
    if cfg.get("rms_norm", True) is not True:
        raise ValueError(f"{where}: rms_norm=false (LayerNorm) Mamba models are not supported")
    if cfg.get("d_intermediate", 0):
        raise ValueError(f"{where}: d_intermediate > 0 (an MLP after each mixer) is not supported, only plain Mamba-1")
    if cfg.get("attn_layer_idx"):
        raise ValueError(f"{where}: hybrid models with attention layers (attn_layer_idx) are not supported")
    ssm = cfg.get("ssm_cfg") or {}
    if not isinstance(ssm, dict):
        raise ValueError(f"{where}: 'ssm_cfg' must be an object")
    layer = ssm.get("layer", "Mamba1")
    if layer != "Mamba1":
        raise ValueError(f"{where}: ssm_cfg.layer '{layer}' is not supported, only Mamba1")
    hidden = _int_field(cfg, "d_model", where=where)
    sub = f"{where} ssm_cfg"
    eps = cfg.get("norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"{where}: 'norm_epsilon' must be a non-negative number, got {eps!r}")
    vocab = _int_field(cfg, "vocab_size", 50277, where=where)
    multiple = cfg.get("pad_vocab_size_multiple", 8) or 1
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"{where}: 'pad_vocab_size_multiple' must be a positive integer, got {multiple!r}")
    if vocab % multiple:
        vocab += multiple - vocab % multiple  # mamba_ssm pads the embedding rows
    return MambaDims(
        hidden_size=hidden,
        num_hidden_layers=_int_field(cfg, "n_layer", where=where),
        vocab_size=vocab,
        intermediate_size=_expand_size(ssm, hidden, "expand", None, sub),
        state_size=_int_field(ssm, "d_state", 16, where=sub),
        conv_kernel=_int_field(ssm, "d_conv", 4, where=sub),
        time_step_rank=_dt_rank(ssm.get("dt_rank", "auto"), hidden, sub),
        layer_norm_epsilon=float(eps),
        use_bias=bool(ssm.get("bias", False)),  # mamba_ssm's default: no projection biases
        use_conv_bias=bool(ssm.get("conv_bias", True)),
        eos_token_id=None,
        source_format="mamba_ssm",
        pad_vocab_size_multiple=multiple,
    )


def _pad_multiple(cfg: dict) -> int:
    value = cfg.get("pad_vocab_size_multiple", 8)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def check_vocab_rows(dims: MambaDims, rows: int, where: str) -> None:
    """Warns when the embedding's row count (which is used) disagrees with the config's
    vocab_size, except for mamba_ssm's padding of the rows to a multiple of
    pad_vocab_size_multiple (vocab_size 50277 with 50280 rows is how the hub's Mamba
    checkpoints come)."""
    multiple = dims.pad_vocab_size_multiple
    padded = -(-dims.vocab_size // multiple) * multiple
    if rows in (dims.vocab_size, padded):
        return
    import warnings

    tail = f"; token ids from {rows} up are rejected" if rows < dims.vocab_size else ""
    warnings.warn(f"{where}: config.json has vocab_size {dims.vocab_size} but the embedding has {rows} rows; "
                  f"the {rows} rows are used{tail}", UserWarning, stacklevel=3)


def read_config(model_dir: str) -> MambaDims:
    path = os.path.join(model_dir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config.json in {model_dir!r}")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    return parse_config(cfg, where=path)


# ------------------------------------------------------------------------------------------
# weights

_SAFETENSORS_DTYPES = {"F32": (np.float32, False), "F16": (np.float16, False), "BF16": (np.uint16, True)}
_HEADER_LIMIT = 100 * 1024 * 1024


@dataclass
class LoadedTensor:
    array: np.ndarray  # float32, float16, or uint16 holding bfloat16 bits
    bfloat16: bool
    release: Callable[[], None] | None = None  # call once the array has been copied

    def copied(self) -> None:
        """Says the caller is done with the array: a memory-mapped one gives its pages back."""
        if self.release is not None:
            self.release()

    def check_finite(self, name: str) -> None:
        """ValueError naming the tensor when it holds a NaN or an infinity (a corrupt file);
        one vectorised pass, no copy of the tensor."""
        a = self.array
        if a.size == 0:
            return
        if self.bfloat16:  # all exponent bits set: an infinity or a NaN
            finite = int(np.max(a & 0x7FFF)) < 0x7F80
        else:  # a float64 sum of float16/32 values cannot overflow: it is finite iff all are
            with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf is the answer, not a problem
                finite = bool(np.isfinite(np.sum(a, dtype=np.float64)))
        if not finite:
            if self.bfloat16:
                bad = int(np.count_nonzero((a & 0x7FFF) >= 0x7F80))
            else:
                bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            raise ValueError(f"tensor '{name}' holds {bad} NaN or infinite value{'s' if bad != 1 else ''}: "
                             f"the checkpoint is corrupt")


def _drop_mapped_pages(mapped: mmap.mmap, begin: int, end: int) -> None:
    """Unmaps a tensor's file pages from this process once the caller has copied it, so that a
    load's peak RSS is the weights plus one tensor rather than twice the checkpoint. Harmless for
    a view still alive: the pages of a read-only file map fault back in on access."""
    advise = getattr(mapped, "madvise", None)
    if advise is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    start = begin // mmap.PAGESIZE * mmap.PAGESIZE
    if end > start:
        advise(mmap.MADV_DONTNEED, start, end - start)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_safetensors(path: str) -> Iterator[tuple[str, LoadedTensor]]:
    """Yields (name, tensor) from one .safetensors file, viewing it through mmap."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: truncated safetensors file (no header)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > _HEADER_LIMIT or 8 + header_len > size:
            raise ValueError(f"{path}: corrupt or truncated safetensors header (length {header_len}, file {size} bytes)")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"{path}: corrupt safetensors header: {exc}") from None
        if not isinstance(header, dict):
            raise ValueError(f"{path}: corrupt safetensors header")
        data_start = 8 + header_len
        data_len = size - data_start
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    try:
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
                raise ValueError(f"{path}: tensor '{name}' has a malformed header entry")
            dtype_name, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
            if not (isinstance(shape, list) and all(_is_count(n) for n in shape)
                    and isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(n) for n in offsets)):
                raise ValueError(f"{path}: tensor '{name}' has a malformed shape or data_offsets "
                                 f"(lists of non-negative integers expected)")
            begin, end = offsets
            if not isinstance(dtype_name, str) or dtype_name not in _SAFETENSORS_DTYPES:
                raise ValueError(f"{path}: tensor '{name}' has dtype {dtype_name}; expected F32, F16 or BF16")
            np_dtype, is_bf16 = _SAFETENSORS_DTYPES[dtype_name]
            count = math.prod(shape)  # Python integers: an absurd shape cannot wrap around
            if not (0 <= begin <= end <= data_len) or end - begin != count * np.dtype(np_dtype).itemsize:
                raise ValueError(
                    f"{path}: tensor '{name}' lies outside the file or has the wrong byte size "
                    f"(offsets {begin}..{end}, {data_len} data bytes): the file is truncated or corrupt")
            array = np.frombuffer(mapped, dtype=np_dtype, count=count, offset=data_start + begin).reshape(shape)
            release = functools.partial(_drop_mapped_pages, mapped, data_start + begin, data_start + end)
            yield name, LoadedTensor(array, is_bf16, release)
    finally:
        # views into the map may still be alive in the caller; the map closes when they are gone
        del mapped


def _read_torch_bin(path: str) -> Iterator[tuple[str, LoadedTensor]]:
    try:
        import torch
    except ImportError:
        raise ValueError(f"{path}: reading pytorch_model.bin needs torch; install torch or convert to safetensors") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    for name, tensor in state.items():
        if tensor.dtype == torch.bfloat16:
            yield name, LoadedTensor(tensor.contiguous().view(torch.int16).numpy().view(np.uint16), True)
        elif tensor.dtype in (torch.float32, torch.float16):
            yield name, LoadedTensor(tensor.contiguous().numpy(), False)
        else:
            raise ValueError(f"{path}: tensor '{name}' has dtype {tensor.dtype}; expected float32, float16 or bfloat16")


def weight_files(model_dir: str) -> list[str]:
    """The weight files of a checkpoint directory, in the order they are read."""
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.isfile(single):
        return [single]
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, KeyError, TypeError) as exc:
            raise ValueError(f"{index} is malformed: {exc!r}") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise ValueError(f"{index} is malformed: 'weight_map' must map tensor names to file names")
        files = []
        for shard in dict.fromkeys(weight_map.values()):
            path = os.path.join(model_dir, shard)
            if os.path.basename(shard) != shard or not os.path.isfile(path):
                raise ValueError(f"{index} names a missing shard '{shard}'")
            files.append(path)
        return files
    legacy = os.path.join(model_dir, "pytorch_model.bin")
    if os.path.isfile(legacy):
        return [legacy]
    raise FileNotFoundError(f"no model.safetensors, model.safetensors.index.json or pytorch_model.bin in {model_dir!r}")


def iter_weights(model_dir: str) -> Iterator[tuple[str, LoadedTensor]]:
    for path in weight_files(model_dir):
        reader = _read_torch_bin if path.endswith(".bin") else _read_safetensors
        yield from reader(path)


@functools.lru_cache(maxsize=None)
def tensor_kinds() -> dict[str, dict]:
    """The C core's table of tensor kinds (csrc/mr_tensors.c) by transformers name: per_layer,
    condition, dims (config field names) and is_matrix. The one list of a checkpoint's tensors."""
    return {row["name"]: row for row in _C.tensor_table()}


def hf_name(kind: str, layer: int) -> str:
    """The name a bare transformers `MambaModel.save_pretrained` gives a tensor kind."""
    return f"layers.{layer}.{kind}" if tensor_kinds()[kind]["per_layer"] else kind


def tensor_shape(kind: str, config: dict) -> tuple[int, ...]:
    """A tensor's shape for a config given as {hidden_size, intermediate_size, state_size, ...}."""
    def factor(word: str) -> int:
        return int(word) if word.isdigit() else int(config[word])

    def size(dim: str) -> int:  # sums of products: "time_step_rank+2*state_size"
        return sum(math.prod(factor(w) for w in term.split("*")) for term in dim.split("+"))
    return tuple(size(dim) for dim in tensor_kinds()[kind]["dims"])


def core_tensor(name: str) -> tuple[str, int] | None:
    """Maps a checkpoint name onto (kind, layer) of the tensor table; None for names to ignore
    (lm_head.*)."""
    if name.startswith("lm_head."):
        return None
    bare = name[len("backbone."):] if name.startswith("backbone.") else name
    bare = _ALIASES.get(bare, bare)
    kinds = tensor_kinds()
    if bare in kinds and not kinds[bare]["per_layer"]:
        return bare, 0
    match = _LAYER_NAME.match(bare)
    if match and match.group(2) in kinds and kinds[match.group(2)]["per_layer"]:
        return match.group(2), int(match.group(1))
    raise ValueError(f"unexpected tensor '{name}' in the checkpoint (not part of a Mamba-1 backbone)")
