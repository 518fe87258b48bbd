"""The architectures mambaret runs, by config.json's ``model_type``: Mamba-1 ("mamba"), Mamba-2
("mamba2") and FalconMamba ("falcon_mamba").

An entry names the architecture and holds its config parser; the C model is built by
arch/loader.py from the one tensor table for every architecture. Original mamba_ssm configs carry
no model_type; their ssm_cfg's layer says Mamba1 or Mamba2 (arch/config.py reads them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .config import parse_transformers_falcon_mamba, parse_transformers_mamba, parse_transformers_mamba2


@dataclass(frozen=True)
class Architecture:
    model_type: str  # config.json's model_type
    name: str  # how messages name it
    parse_config: Callable  # (config dict, where) -> MambaDims


ARCHITECTURES: dict[str, Architecture] = {
    "mamba": Architecture("mamba", "Mamba-1", parse_transformers_mamba),
    "mamba2": Architecture("mamba2", "Mamba-2", parse_transformers_mamba2),
    "falcon_mamba": Architecture("falcon_mamba", "FalconMamba", parse_transformers_falcon_mamba),
}

# model_types of hybrids and relatives that are not plain Mamba stacks: named in the error
_NOT_RUN = {"jamba": "attention layers", "zamba": "attention layers", "zamba2": "attention layers",
            "bamba": "attention layers", "falcon_h1": "attention heads beside the SSM",
            "nemotron_h": "attention and MLP layers", "granitemoehybrid": "attention and MoE layers"}


def architecture(model_type, where: str) -> Architecture:
    """The entry for a model_type; ValueError naming the supported ones otherwise."""
    entry = ARCHITECTURES.get(model_type) if isinstance(model_type, str) else None
    if entry is None:
        supported = ", ".join(f"{a.name} '{a.model_type}'" for a in ARCHITECTURES.values())
        why = f" (a hybrid with {_NOT_RUN[model_type]})" if model_type in _NOT_RUN else ""
        raise ValueError(f"{where}: model_type '{model_type}'{why} is not supported; mambaret runs {supported}")
    return entry
