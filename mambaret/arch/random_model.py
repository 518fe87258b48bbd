"""Seeded random Mamba-1 checkpoints in HF format, written with NumPy alone (no torch).

For demos, benchmarks and tests of the loading path. Weights follow the scale of HF's
initialisation closely enough for stable activations; they carry no meaning.
"""
from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np

from .._atomic import give_default_mode

SHAPES = {
    # the state-spaces/mamba-*-hf configurations
    "130m": dict(hidden_size=768, num_hidden_layers=24),
    "370m": dict(hidden_size=1024, num_hidden_layers=48),
    "790m": dict(hidden_size=1536, num_hidden_layers=48),
    "1.4b": dict(hidden_size=2048, num_hidden_layers=48),
    "2.8b": dict(hidden_size=2560, num_hidden_layers=64),
}


def random_config(hidden_size=64, num_hidden_layers=2, vocab_size=50280, state_size=16, conv_kernel=4,
                  expand=2, time_step_rank="auto", use_bias=False, use_conv_bias=True,
                  layer_norm_epsilon=1e-5) -> dict:
    return {
        "model_type": "mamba",
        "architectures": ["MambaForCausalLM"],
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "vocab_size": vocab_size,
        "state_size": state_size,
        "conv_kernel": conv_kernel,
        "expand": expand,
        "intermediate_size": expand * hidden_size,
        "time_step_rank": math.ceil(hidden_size / 16) if time_step_rank == "auto" else time_step_rank,
        "use_bias": use_bias,
        "use_conv_bias": use_conv_bias,
        "layer_norm_epsilon": layer_norm_epsilon,
        "residual_in_fp32": True,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 0,
    }


def random_weights(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d, E, N = cfg["hidden_size"], cfg["intermediate_size"], cfg["state_size"]
    K, R, V = cfg["conv_kernel"], cfg["time_step_rank"], cfg["vocab_size"]

    def normal(*shape, scale):
        return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)

    w = {"backbone.embeddings.weight": normal(V, d, scale=0.02),
         "backbone.norm_f.weight": 1.0 + normal(d, scale=0.05)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"backbone.layers.{i}."
        dt = np.exp(rng.uniform(math.log(1e-3), math.log(1e-1), E)).astype(np.float32)
        w[p + "norm.weight"] = 1.0 + normal(d, scale=0.05)
        w[p + "mixer.in_proj.weight"] = normal(2 * E, d, scale=1 / math.sqrt(d))
        w[p + "mixer.conv1d.weight"] = normal(E, 1, K, scale=1 / math.sqrt(K))
        if cfg["use_conv_bias"]:
            w[p + "mixer.conv1d.bias"] = normal(E, scale=0.1)
        w[p + "mixer.x_proj.weight"] = normal(R + 2 * N, E, scale=1 / math.sqrt(E))
        w[p + "mixer.dt_proj.weight"] = normal(E, R, scale=R ** -0.5)
        w[p + "mixer.dt_proj.bias"] = (dt + np.log(-np.expm1(-dt))).astype(np.float32)  # softplus^-1(dt)
        w[p + "mixer.A_log"] = np.log(np.tile(np.arange(1, N + 1, dtype=np.float32), (E, 1)))
        w[p + "mixer.D"] = 1.0 + normal(E, scale=0.05)
        w[p + "mixer.out_proj.weight"] = normal(d, E, scale=1 / math.sqrt(E * cfg["num_hidden_layers"]))
        if cfg["use_bias"]:
            w[p + "mixer.in_proj.bias"] = normal(2 * E, scale=0.02)
            w[p + "mixer.out_proj.bias"] = normal(d, scale=0.02)
    return w


def write_random_model(path: str, seed: int = 0, tokenizer_json: str | None = None, shape: str | None = None,
                       **config) -> str:
    """Writes config.json + model.safetensors (+ tokenizer.json when given) into path."""
    from safetensors.numpy import save_file

    if shape is not None:
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {sorted(SHAPES)}, got {shape!r}")
        config = {**SHAPES[shape], **config}
    cfg = random_config(**config)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
    save_file(random_weights(cfg, seed), os.path.join(path, "model.safetensors"))
    give_default_mode(os.path.join(path, "model.safetensors"))  # safetensors creates 0600
    if tokenizer_json:
        shutil.copyfile(tokenizer_json, os.path.join(path, "tokenizer.json"))
    return path
