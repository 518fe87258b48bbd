"""Reads Mamba weights from safetensors (single or sharded) or pytorch_model.bin, and the C
core's table of tensor kinds that names them.

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

from .. import _C

# mamba_ssm's names for tensors whose transformers name is in the C core's table
_ALIASES = {"embedding.weight": "embeddings.weight"}
_LAYER_NAME = re.compile(r"^layers\.(\d+)\.(.+)$")
# an exit head: layer k's own gain vector (1-based k; mambaret.arch.exits)
_EXIT_NAME = re.compile(r"^(?:backbone\.)?exits\.(\d+)\.weight$")

# I8: the int8 folders' weights and rotations (mambaret/arch/int8.py)
_SAFETENSORS_DTYPES = {"F32": (np.float32, False), "F16": (np.float16, False), "BF16": (np.uint16, True),
                       "I8": (np.int8, False)}
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
                raise ValueError(f"{path}: tensor '{name}' has dtype {dtype_name}; expected F32, F16 or BF16 "
                                 f"(or I8 in an int8 folder)")
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
def tensor_kinds(arch: str = "mamba") -> dict[str, dict]:
    """The C core's table of tensor kinds (csrc/models/mr_tensors.c) for one architecture, by
    transformers name: per_layer, condition, dims (config field names) and is_matrix. The one list
    of a checkpoint's tensors. A name has one row per architecture (Mamba-1's and Mamba-2's
    "mixer.A_log" differ in shape)."""
    return {row["name"]: row for row in _C.tensor_table() if arch in row["architectures"]}


def hf_name(kind: str, layer: int) -> str:
    """The name a bare transformers model's `save_pretrained` gives a tensor kind."""
    return f"layers.{layer}.{kind}" if _per_layer_names()[kind] else kind


@functools.lru_cache(maxsize=None)
def _per_layer_names() -> dict[str, bool]:
    """Whether each table name is per layer (the same in every architecture that has it)."""
    return {row["name"]: row["per_layer"] for row in _C.tensor_table()}


def tensor_shape(kind: str, config: dict) -> tuple[int, ...]:
    """A tensor's shape for a config given as {hidden_size, intermediate_size, state_size, ...}
    (MambaDims.core_config's keys; "arch" picks the architecture, Mamba-1 without it)."""
    def factor(word: str) -> int:
        return int(word) if word.isdigit() else int(config[word])

    def size(dim: str) -> int:  # sums of products: "time_step_rank+2*state_size"
        return sum(math.prod(factor(w) for w in term.split("*")) for term in dim.split("+"))
    return tuple(size(dim) for dim in tensor_kinds(config.get("arch", "mamba"))[kind]["dims"])


def exit_head_layer(name: str) -> int | None:
    """The layer k of an exit head `exits.{k}.weight` (1-based), else None."""
    match = _EXIT_NAME.match(name)
    return int(match.group(1)) if match else None


def core_tensor(name: str, arch: str = "mamba") -> tuple[str, int] | None:
    """Maps a checkpoint name onto (kind, layer) of the tensor table; None for names to ignore
    (lm_head.*) and for exit heads (exit_head_layer reads those)."""
    if name.startswith("lm_head.") or _EXIT_NAME.match(name):
        return None
    bare = name[len("backbone."):] if name.startswith("backbone.") else name
    bare = _ALIASES.get(bare, bare)
    kinds = tensor_kinds(arch)
    if bare in kinds and not kinds[bare]["per_layer"]:
        return bare, 0
    match = _LAYER_NAME.match(bare)
    if match and match.group(2) in kinds and kinds[match.group(2)]["per_layer"]:
        return match.group(2), int(match.group(1))
    raise ValueError(f"unexpected tensor '{name}' in the checkpoint (not part of a {_ARCH_NAMES.get(arch, arch)} "
                     f"backbone)")


_ARCH_NAMES = {"mamba": "Mamba-1", "mamba2": "Mamba-2", "falcon_mamba": "FalconMamba"}
