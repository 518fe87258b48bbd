"""Checks that llama.cpp, fed a GGUF written by write_gguf.py, embeds like HF transformers.

    python bench/peers/parity_llama.py [--llama-python /work/peers/llama-venv/bin/python] [--out DIR]

Builds a seeded 2-layer random MambaModel (every parameter perturbed by 0.05*randn so that no
tensor keeps its initialisation's symmetry), computes HF's final-norm hidden state at the last
token of a few token sequences, writes the GGUF, asks llama.cpp (in its own virtual environment)
for its pooled last-token embedding of the same sequences, and compares raw and L2-normalised
vectors. Prints a JSON summary; exits 1 when the normalised vectors differ by more than --tol.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_LLAMA_PYTHON = os.environ.get("MAMBARET_BENCH_LLAMA_PYTHON", "/work/peers/llama-venv/bin/python")


def build_parity_model(path: str, seed: int = 0) -> None:
    import torch
    from transformers import MambaConfig, MambaModel

    torch.manual_seed(seed)
    cfg = MambaConfig(vocab_size=50280, hidden_size=64, state_size=16, num_hidden_layers=2, conv_kernel=4,
                      expand=2, time_step_rank=8, use_bias=False, use_conv_bias=True, layer_norm_epsilon=1e-5,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    model = MambaModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)


def hf_last_token(path: str, sequences: list[list[int]]) -> np.ndarray:
    import torch
    from transformers import MambaModel

    model = MambaModel.from_pretrained(path, dtype=torch.float32).eval()
    rows = []
    with torch.inference_mode():
        for ids in sequences:  # one at a time: no padding to get wrong
            out = model(input_ids=torch.tensor([ids]), use_cache=False).last_hidden_state
            rows.append(out[0, -1].double().numpy())
    return np.stack(rows)


PARITY_LENGTHS = [1, 5, 17, 64, 300, 2500]  # the last spans two llama.cpp decode calls (n_batch 2048)


def parity_sequences(seed: int = 1, lengths=PARITY_LENGTHS) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(2, 50277, size=n).tolist() for n in lengths]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-python", default=DEFAULT_LLAMA_PYTHON)
    ap.add_argument("--out", help="keep the model, GGUF and vectors here (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model-dir", help="check this fp32 checkpoint instead of a fresh 2-layer one")
    ap.add_argument("--lengths", help="comma-separated sequence lengths (default 1,5,17,64,300,2500)")
    ap.add_argument("--tol", type=float, default=1e-4, help="max abs error allowed on normalised vectors")
    args = ap.parse_args(argv)

    work = args.out or tempfile.mkdtemp(prefix="mambaret-parity-")
    os.makedirs(work, exist_ok=True)
    if args.model_dir:
        model_dir = args.model_dir
    else:
        model_dir = os.path.join(work, "hf-2layer")
        build_parity_model(model_dir)
    gguf_path = os.path.join(work, os.path.basename(os.path.normpath(model_dir)) + ".gguf")
    lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else PARITY_LENGTHS
    sequences = parity_sequences(lengths=lengths)
    ref = hf_last_token(model_dir, sequences)

    subprocess.run([args.llama_python, os.path.join(HERE, "write_gguf.py"), model_dir, gguf_path], check=True,
                   stdout=subprocess.DEVNULL)
    tokens_path = os.path.join(work, "tokens.json")
    with open(tokens_path, "w") as f:
        json.dump(sequences, f)
    vec_path = os.path.join(work, "llama.npy")
    run = subprocess.run([args.llama_python, os.path.join(HERE, "llama_embed.py"), "embed", gguf_path, tokens_path,
                          vec_path, "--threads", str(args.threads)], check=True, capture_output=True, text=True)
    llama_info = json.loads(run.stdout.strip().splitlines()[-1])
    got = np.load(vec_path).astype(np.float64)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    raw_abs = np.abs(got - ref)
    norm_abs = np.abs(unit(got) - unit(ref))
    summary = {
        "lengths": [len(s) for s in sequences],
        "raw_max_abs": float(raw_abs.max()),
        "raw_max_rel": float((raw_abs.max(axis=1) / np.abs(ref).max(axis=1)).max()),
        "normalised_max_abs": float(norm_abs.max()),
        "min_cosine": float((unit(got) * unit(ref)).sum(axis=1).min()),
        "norm_ratio_llama_over_hf": [float(r) for r in np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)],
        "per_sequence_raw_max_abs": [float(v) for v in raw_abs.max(axis=1)],
        "llama_cpp_python": llama_info.get("llama_cpp_python"),
        "llama_system_info": llama_info.get("system_info"),
        "model_dir": model_dir,
    }
    summary["ok"] = summary["normalised_max_abs"] <= args.tol
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
