"""Mamba-1 configs: HF transformers' MambaConfig and original mamba_ssm configs, parsed into
MambaDims (the shapes the C core is built with)."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass


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
    from .registry import architecture  # the registry imports this module's parsers

    model_type = cfg.get("model_type", "mamba")
    quant = cfg.get("quantization_config")
    if isinstance(quant, dict) and quant.get("quant_method") == "mambaret_int8":
        # an int8 folder hides its model_type from transformers so that it refuses it (arch/int8.py)
        model_type = quant.get("base_model_type", model_type)
    return architecture(model_type, where).parse_config(cfg, where)


def parse_transformers_mamba(cfg: dict, where: str = "config.json") -> MambaDims:
    """Reads a HF MambaConfig dict (model_type "mamba": Mamba-1)."""
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
