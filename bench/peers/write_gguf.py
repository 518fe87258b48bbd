"""Writes a HF Mamba-1 checkpoint (config.json + model.safetensors, fp32) as a GGUF for llama.cpp.

    python bench/peers/write_gguf.py MODEL_DIR OUT.gguf [--tokenizer tokenizer.json]

Only for benchmarking llama.cpp on the very weights mambaret reads. Needs numpy, safetensors and
the `gguf` package (kept out of mambaret's own dependencies). The layout follows llama.cpp's
"mamba" architecture:

- names: token_embd, output_norm, blk.N.{attn_norm, ssm_in, ssm_conv1d, ssm_x, ssm_dt, ssm_a,
  ssm_d, ssm_out}; ssm_a and ssm_d carry no ".weight" suffix;
- ssm_a holds A = -exp(A_log), since llama.cpp's scan takes A itself;
- the depthwise conv weight (E, 1, K) is stored as (E, K);
- no output tensor when the LM head is tied (llama.cpp then reuses token_embd);
- a GPT-2 style BPE vocabulary padded to the embedding's row count, because llama.cpp refuses a
  model without a tokenizer even when it is fed token ids.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

DEFAULT_TOKENIZER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data",
                                 "tokenizers", "gpt-neox-20b.json")

# per-layer HF mixer/norm tensor -> llama.cpp tensor name (without the "blk.N." prefix)
LAYER_TENSORS = {
    "norm.weight": "attn_norm.weight",
    "mixer.in_proj.weight": "ssm_in.weight",
    "mixer.conv1d.weight": "ssm_conv1d.weight",
    "mixer.conv1d.bias": "ssm_conv1d.bias",
    "mixer.x_proj.weight": "ssm_x.weight",
    "mixer.dt_proj.weight": "ssm_dt.weight",
    "mixer.dt_proj.bias": "ssm_dt.bias",
    "mixer.A_log": "ssm_a",
    "mixer.D": "ssm_d",
    "mixer.out_proj.weight": "ssm_out.weight",
}


def read_mamba_config(model_dir: str) -> dict:
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    d = cfg.get("hidden_size", cfg.get("d_model"))
    if d is None:
        raise ValueError("config.json has neither hidden_size nor d_model")
    out = {
        "d": int(d),
        "layers": int(cfg.get("num_hidden_layers", cfg.get("n_layer", 0))),
        "inner": int(cfg.get("intermediate_size") or cfg.get("d_inner") or cfg.get("expand", 2) * d),
        "state": int(cfg.get("state_size", cfg.get("d_state", 16))),
        "conv": int(cfg.get("conv_kernel", cfg.get("d_conv", 4))),
        "eps": float(cfg.get("layer_norm_epsilon", cfg.get("rms_norm_eps", 1e-5))),
        "eos": int(cfg["eos_token_id"]) if cfg.get("eos_token_id") is not None else 0,
    }
    rank = cfg.get("time_step_rank", cfg.get("dt_rank", "auto"))
    out["dt_rank"] = math.ceil(out["d"] / 16) if rank in (None, "auto") else int(rank)
    if cfg.get("use_bias"):
        raise ValueError("llama.cpp's mamba architecture has no in_proj/out_proj bias (use_bias must be false)")
    if cfg.get("use_conv_bias") is False:
        raise ValueError("llama.cpp's mamba architecture requires a conv1d bias (use_conv_bias must be true)")
    if out["inner"] != 2 * out["d"]:
        raise ValueError(f"llama.cpp supports expand=2 only (intermediate_size {out['inner']}, hidden_size {d})")
    return out


def load_backbone(model_dir: str) -> dict[str, np.ndarray]:
    """Reads the safetensors weights as float32 with the 'backbone.' prefix and lm_head removed."""
    from safetensors.numpy import load_file

    path = os.path.join(model_dir, "model.safetensors")
    tensors = {}
    for name, value in load_file(path).items():
        if name.startswith("lm_head."):
            continue
        name = name.removeprefix("backbone.")
        if value.dtype != np.float32:
            raise ValueError(f"tensor '{name}' is {value.dtype}; this writer expects an fp32 checkpoint")
        tensors[name] = value
    if "embedding.weight" in tensors:  # mamba_ssm's spelling
        tensors["embeddings.weight"] = tensors.pop("embedding.weight")
    return tensors


def gguf_tensors(cfg: dict, tensors: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    remaining = dict(tensors)

    def take(name: str) -> np.ndarray:
        if name not in remaining:
            raise ValueError(f"missing tensor '{name}'")
        return remaining.pop(name)

    out = [("token_embd.weight", take("embeddings.weight")), ("output_norm.weight", take("norm_f.weight"))]
    E, K = cfg["inner"], cfg["conv"]
    for i in range(cfg["layers"]):
        for hf_name, gguf_name in LAYER_TENSORS.items():
            value = take(f"layers.{i}.{hf_name}")
            if hf_name == "mixer.A_log":
                value = -np.exp(value)
            elif hf_name == "mixer.conv1d.weight":
                value = value.reshape(E, K)
            out.append((f"blk.{i}.{gguf_name}", np.ascontiguousarray(value, dtype=np.float32)))
    if remaining:
        raise ValueError(f"unexpected tensors: {sorted(remaining)}")
    return out


def bpe_vocabulary(tokenizer_json: str, rows: int) -> tuple[list[str], list[int], list[str]]:
    """Token strings by id, their GGUF token types and the merges, padded to `rows` entries."""
    import gguf

    with open(tokenizer_json, encoding="utf-8") as f:
        tok = json.load(f)
    model = tok["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"{tokenizer_json}: expected a BPE tokenizer, got {model.get('type')!r}")
    by_id: dict[int, tuple[str, int]] = {i: (s, gguf.TokenType.NORMAL) for s, i in model["vocab"].items()}
    for added in tok.get("added_tokens", []):
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        by_id[int(added["id"])] = (added["content"], kind)
    if max(by_id) >= rows:
        raise ValueError(f"tokenizer has id {max(by_id)} but the embedding has only {rows} rows")
    tokens, types = [], []
    for i in range(rows):
        text, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(text)
        types.append(int(kind))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, types, merges


def write_gguf(model_dir: str, out_path: str, tokenizer_json: str | None = None, name: str | None = None) -> str:
    import gguf

    cfg = read_mamba_config(model_dir)
    tensors = gguf_tensors(cfg, load_backbone(model_dir))
    rows = tensors[0][1].shape[0]
    if tokenizer_json is None:
        local = os.path.join(model_dir, "tokenizer.json")
        tokenizer_json = local if os.path.exists(local) else os.path.normpath(DEFAULT_TOKENIZER)
    tokens, types, merges = bpe_vocabulary(tokenizer_json, rows)

    writer = gguf.GGUFWriter(out_path, arch="mamba")
    writer.add_name(name or os.path.basename(os.path.normpath(model_dir)))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(2 ** 20)  # a recurrent model has no context limit; llama.cpp wants a value
    writer.add_embedding_length(cfg["d"])
    writer.add_feed_forward_length(0)  # read unconditionally by llama.cpp's loader
    writer.add_head_count(0)
    writer.add_block_count(cfg["layers"])
    writer.add_ssm_conv_kernel(cfg["conv"])
    writer.add_ssm_inner_size(cfg["inner"])
    writer.add_ssm_state_size(cfg["state"])
    writer.add_ssm_time_step_rank(cfg["dt_rank"])
    writer.add_ssm_dt_b_c_rms(False)  # plain Mamba-1 (Falcon-Mamba would set it)
    writer.add_layer_norm_rms_eps(cfg["eps"])

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("mpt")  # llama.cpp's name for the GPT-NeoX pre-tokenizer
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter in (writer.add_bos_token_id, writer.add_eos_token_id, writer.add_unk_token_id,
                   writer.add_pad_token_id):
        setter(cfg["eos"])
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)

    for tensor_name, value in tensors:
        writer.add_tensor(tensor_name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--tokenizer", help="tokenizer.json (default: the model's own, else the shared GPT-NeoX one)")
    ap.add_argument("--name")
    args = ap.parse_args(argv)
    write_gguf(args.model_dir, args.out, args.tokenizer, args.name)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
