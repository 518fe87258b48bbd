"""Refusing, before allocating, a request for more memory than the machine has.

With Linux's default overcommit a large allocation can succeed and the process be killed later,
when the pages are touched; so sizes that come from outside (a config, a k, a batch) are checked
against the machine's memory first and refused with a ``MemoryError`` that says what asked.
"""
from __future__ import annotations

import os


def machine_bytes() -> int | None:
    """Physical memory plus swap, in bytes (None where it cannot be read)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.split()[1:]}
        return fields["MemTotal"] + fields.get("SwapTotal", 0)
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_allocation(nbytes: int, what: str) -> None:
    """Raises MemoryError when ``nbytes`` exceed the machine's memory."""
    total = machine_bytes()
    if total is not None and nbytes > total:
        raise MemoryError(f"{what} would need {nbytes / 2**30:.1f} GiB; this machine has "
                          f"{total / 2**30:.1f} GiB (memory and swap)")


def model_weight_bytes(dims, vocab_rows: int) -> int:
    """Bytes of float32 weights that a model of these dimensions holds, from the tensor table
    (Python integers, so absurd configs cannot overflow)."""
    import math

    from .arch.weights import tensor_kinds, tensor_shape

    config = dims.core_config(vocab_rows)
    flags = {"always": True, "use_bias": dims.use_bias, "use_conv_bias": dims.use_conv_bias}
    total = 0
    for name, row in tensor_kinds(dims.arch).items():
        if flags[row["condition"]]:
            count = math.prod(tensor_shape(name, config))
            total += count * (dims.num_hidden_layers if row["per_layer"] else 1)
    return 4 * total
