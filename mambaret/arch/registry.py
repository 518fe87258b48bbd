"""The architectures mambaret runs, by config.json's ``model_type``: today one, Mamba-1 ("mamba").

An entry names the architecture and holds its config parser, so that another architecture
(Mamba-2, FalconMamba) is one more entry; the C model is built by arch/loader.py from the one
tensor table for every architecture. Original mamba_ssm configs carry no model_type; they are
always Mamba-1 (arch/config.py reads them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .config import parse_transformers_mamba


@dataclass(frozen=True)
class Architecture:
    model_type: str  # config.json's model_type
    name: str  # how messages name it
    parse_config: Callable  # (config dict, where) -> MambaDims


ARCHITECTURES: dict[str, Architecture] = {
    "mamba": Architecture("mamba", "Mamba-1", parse_transformers_mamba),
}


def architecture(model_type, where: str) -> Architecture:
    """The entry for a model_type; ValueError naming the supported ones otherwise."""
    entry = ARCHITECTURES.get(model_type) if isinstance(model_type, str) else None
    if entry is None:
        supported = ", ".join(f"{a.name}, '{a.model_type}'" for a in ARCHITECTURES.values())
        raise ValueError(f"{where}: model_type '{model_type}' is not supported (only {supported})")
    return entry
