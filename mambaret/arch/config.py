"""Backbone configs: transformers' MambaConfig, Mamba2Config and FalconMambaConfig, and original
mamba_ssm configs (Mamba1 or Mamba2 layers), parsed into MambaDims (the shapes the C core is
built with)."""
from __future__ import annotations

import dataclasses
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
    arch: str = "mamba"  # transformers' model_type: "mamba", "mamba2" or "falcon_mamba"
    # Mamba-2: intermediate_size = num_heads * head_dim, B and C shared by the heads of a group
    num_heads: int = 0
    head_dim: int = 0
    n_groups: int = 1
    chunk_size: int = 256  # the chunked scan's block in transformers; the result does not depend on it
    time_step_limit: tuple = (0.0, math.inf)
    mixer_rms_eps: float = 1e-6  # FalconMamba's norms on dt, B and C

    def core_config(self, vocab_rows: int) -> dict:
        extra = {}
        if self.arch == "mamba2":
            extra = {"num_heads": self.num_heads, "head_dim": self.head_dim, "n_groups": self.n_groups,
                     "time_step_limit": tuple(self.time_step_limit)}
        elif self.arch == "falcon_mamba":
            extra = {"mixer_rms_eps": self.mixer_rms_eps}
        return {
            "arch": self.arch,
            **extra,
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


def _eps_field(cfg: dict, key: str, default: float, where: str) -> float:
    eps = cfg.get(key, default)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0 or not math.isfinite(eps):
        raise ValueError(f"{where}: '{key}' must be a finite non-negative number, got {eps!r}")
    return float(eps)


def _json_float(value):
    """A float as config files write them: a number, "inf", or transformers' {"__float__": "Infinity"}
    (JSON has no infinity); anything else unchanged, for the caller to refuse."""
    if isinstance(value, dict) and set(value) == {"__float__"}:
        value = value["__float__"]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _time_step_limit(value, where: str) -> tuple[float, float]:
    if value is None:
        return 0.0, math.inf
    if isinstance(value, (list, tuple)):
        value = [_json_float(v) for v in value]
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
    if not ok or not (0 <= value[0] <= value[1]):  # NaN fails the comparison
        raise ValueError(f"{where}: 'time_step_limit' must be [min, max] with 0 <= min <= max, got {value!r}")
    return float(value[0]), float(value[1])


def _mamba2_heads(intermediate: int, head_dim, num_heads, n_groups, where: str) -> tuple[int, int, int]:
    """(num_heads, head_dim, n_groups), checked against each other and intermediate_size."""
    for key, value in (("head_dim", head_dim), ("num_heads", num_heads), ("n_groups", n_groups)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{where}: '{key}' must be a positive integer, got {value!r}")
    if num_heads * head_dim != intermediate:
        raise ValueError(f"{where}: num_heads * head_dim = {num_heads} * {head_dim} must equal the intermediate size "
                         f"(expand * hidden_size) {intermediate}")
    if num_heads % n_groups:
        raise ValueError(f"{where}: n_groups {n_groups} must divide num_heads {num_heads}")
    return num_heads, head_dim, n_groups


def parse_transformers_mamba2(cfg: dict, where: str = "config.json") -> MambaDims:
    """Reads a HF Mamba2Config dict (model_type "mamba2")."""
    hidden = _int_field(cfg, "hidden_size", where=where)
    intermediate = _expand_size(cfg, hidden, "expand", None, where)  # Mamba2Config has no intermediate_size
    heads, head_dim, groups = _mamba2_heads(intermediate, cfg.get("head_dim", 64), cfg.get("num_heads", 128),
                                            cfg.get("n_groups", 8), where)
    return MambaDims(
        hidden_size=hidden,
        num_hidden_layers=_int_field(cfg, "num_hidden_layers", where=where),
        vocab_size=_int_field(cfg, "vocab_size", 32768, where=where),
        intermediate_size=intermediate,
        state_size=_int_field(cfg, "state_size", 128, where=where),
        conv_kernel=_int_field(cfg, "conv_kernel", 4, where=where),
        time_step_rank=_dt_rank(cfg.get("time_step_rank", "auto"), hidden, where),
        layer_norm_epsilon=_eps_field(cfg, "layer_norm_epsilon", 1e-5, where),
        use_bias=bool(cfg.get("use_bias", False)),
        use_conv_bias=bool(cfg.get("use_conv_bias", True)),
        eos_token_id=cfg.get("eos_token_id") if isinstance(cfg.get("eos_token_id"), int) else None,
        source_format="transformers",
        pad_vocab_size_multiple=_pad_multiple(cfg),
        arch="mamba2",
        num_heads=heads,
        head_dim=head_dim,
        n_groups=groups,
        chunk_size=_int_field(cfg, "chunk_size", 256, where=where),
        time_step_limit=_time_step_limit(cfg.get("time_step_limit"), where),
    )


def parse_transformers_falcon_mamba(cfg: dict, where: str = "config.json") -> MambaDims:
    """Reads a HF FalconMambaConfig dict (model_type "falcon_mamba"): Mamba-1 with weightless RMS
    norms on dt, B and C. intermediate_size wins over expand, which some published configs state
    wrongly."""
    return dataclasses.replace(parse_transformers_mamba(cfg, where), arch="falcon_mamba",
                               mixer_rms_eps=_eps_field(cfg, "mixer_rms_eps", 1e-6, where))


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
    if layer not in ("Mamba1", "Mamba2"):
        raise ValueError(f"{where}: ssm_cfg.layer '{layer}' is not supported, only Mamba1 and Mamba2")
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
    if layer == "Mamba2":
        return _parse_mamba_ssm_mamba2(cfg, ssm, hidden, vocab, multiple, float(eps), where)
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


def _parse_mamba_ssm_mamba2(cfg: dict, ssm: dict, hidden: int, vocab: int, multiple: int, eps: float,
                            where: str) -> MambaDims:
    """mamba_ssm's Mamba2 layer (ssm_cfg {"layer": "Mamba2", ...}) with its own defaults."""
    sub = f"{where} ssm_cfg"
    intermediate = _expand_size(ssm, hidden, "expand", None, sub)
    if ssm.get("d_ssm") not in (None, intermediate):
        raise ValueError(f"{sub}: d_ssm {ssm['d_ssm']!r} != d_inner {intermediate} (a gated MLP beside the SSM) "
                         "is not supported")
    if ssm.get("rmsnorm", True) is not True or ssm.get("norm_before_gate", False) is not False:
        raise ValueError(f"{sub}: only rmsnorm=true with norm_before_gate=false is supported")
    head_dim = ssm.get("headdim", 64)
    if isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0:
        raise ValueError(f"{sub}: 'headdim' must be a positive integer, got {head_dim!r}")
    if intermediate % head_dim:
        raise ValueError(f"{sub}: headdim {head_dim} must divide d_inner {intermediate}")
    # the same fields in Mamba2Config's terms, read by its parser (ssm_cfg's keys checked there)
    translated = {"hidden_size": hidden, "num_hidden_layers": _int_field(cfg, "n_layer", where=where),
                  "vocab_size": vocab, "expand": ssm.get("expand", 2), "head_dim": head_dim,
                  "num_heads": intermediate // head_dim, "n_groups": ssm.get("ngroups", 1),
                  "state_size": ssm.get("d_state", 128), "conv_kernel": ssm.get("d_conv", 4),
                  "layer_norm_epsilon": eps, "use_bias": ssm.get("bias", False),
                  "use_conv_bias": ssm.get("conv_bias", True), "chunk_size": ssm.get("chunk_size", 256),
                  "time_step_limit": ssm.get("dt_limit")}
    dims = parse_transformers_mamba2(translated, where=sub)
    return dataclasses.replace(dims, source_format="mamba_ssm", pad_vocab_size_multiple=multiple, eos_token_id=None)


# transformers' model class of each architecture (config.json's "architectures")
TRANSFORMERS_CLASSES = {"mamba": "MambaModel", "mamba2": "Mamba2Model", "falcon_mamba": "FalconMambaModel"}


def transformers_config(dims: MambaDims, vocab_rows: int) -> dict:
    """config.json in transformers' terms for the architecture (MambaConfig, Mamba2Config or
    FalconMambaConfig): what MambaEncoder, transformers and sentence-transformers read."""
    expand = dims.intermediate_size / dims.hidden_size
    if int(expand * dims.hidden_size) != dims.intermediate_size:
        raise ValueError(f"intermediate size {dims.intermediate_size} is not expand x hidden size {dims.hidden_size}")
    eos = dims.eos_token_id if dims.eos_token_id is not None else 0
    config = {
        "model_type": dims.arch,
        "architectures": [TRANSFORMERS_CLASSES[dims.arch]],
        "hidden_size": dims.hidden_size,
        "num_hidden_layers": dims.num_hidden_layers,
        "vocab_size": vocab_rows,
        "state_size": dims.state_size,
        "conv_kernel": dims.conv_kernel,
        "expand": int(expand) if expand == int(expand) else expand,
        "intermediate_size": dims.intermediate_size,
        "time_step_rank": dims.time_step_rank,
        "use_bias": dims.use_bias,
        "use_conv_bias": dims.use_conv_bias,
        "layer_norm_epsilon": dims.layer_norm_epsilon,
        "residual_in_fp32": True,
        "hidden_act": "silu",
        "bos_token_id": eos,
        "eos_token_id": eos,
        "pad_token_id": eos,
        "torch_dtype": "float32",
    }
    if dims.arch == "mamba2":
        del config["intermediate_size"]  # Mamba2Config derives it from expand
        config.update(num_heads=dims.num_heads, head_dim=dims.head_dim, n_groups=dims.n_groups,
                      chunk_size=dims.chunk_size, time_step_limit=list(dims.time_step_limit),
                      tie_word_embeddings=False)
    elif dims.arch == "falcon_mamba":
        config["mixer_rms_eps"] = dims.mixer_rms_eps
    return config


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
