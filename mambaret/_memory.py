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
    """Bytes of float32 weights that a Mamba-1 model of these dimensions holds (Python integers,
    so absurd configs cannot overflow)."""
    d, E, N, K, R = (dims.hidden_size, dims.intermediate_size, dims.state_size, dims.conv_kernel,
                     dims.time_step_rank)
    per_layer = (d + 2 * E * d + E * K + (R + 2 * N) * E + E * R + E + 2 * E * N + E + d * E
                 + (2 * E + d if dims.use_bias else 0) + (E if dims.use_conv_bias else 0))
    return 4 * (vocab_rows * d + d + per_layer * dims.num_hidden_layers)
