"""Each class of bad input and the exception it gets, as a Markdown table.

    python bench/bad_inputs.py

Runs every case for real (small files in a temporary folder) and prints what it raised; a case
that raises nothing, or something outside its expected kinds, is marked FAIL (exit status 1).
"""
from __future__ import annotations

import glob
import json
import os
import struct
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "fuzz"))

import mambaret as mr  # noqa: E402
from mambaret import _C  # noqa: E402
from mambaret._memory import machine_bytes  # noqa: E402
from mambaret.arch.random_model import write_random_model  # noqa: E402


def cases(tmp: str):
    def model_with(**fields):
        folder = write_random_model(tempfile.mkdtemp(dir=tmp), hidden_size=16, num_hidden_layers=2, vocab_size=256)
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
        cfg.update(fields)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(cfg, f)
        return lambda: mr.MambaEncoder.from_pretrained(folder)

    yield "config: 65,536 layers x 4M-wide mixer (exabytes)", (MemoryError,), \
        model_with(num_hidden_layers=65536, intermediate_size=1 << 22)
    yield "config: hidden_size 2^20, embedding 16 wide", (ValueError,), model_with(hidden_size=1 << 20)
    yield "_C.Model: every dimension at its limit", (MemoryError,), lambda: _C.Model(dict(
        hidden_size=1 << 20, num_hidden_layers=1 << 16, vocab_size=1 << 31, intermediate_size=1 << 22, state_size=16,
        conv_kernel=4, time_step_rank=64, layer_norm_epsilon=1e-5, use_bias=False, use_conv_bias=True))

    index = mr.FlatIndex(4)
    index.add(np.eye(4))
    yield "search: k so large the results exceed memory", (MemoryError,), \
        lambda: index.search(np.ones((1, 4)), k=machine_bytes() // 12 + 1)

    path = os.path.join(tmp, "m.index")
    big = mr.FlatIndex(64)
    big.add(np.ones((1000, 64)))
    big.save(path)
    mapped = mr.FlatIndex.load(path, mmap=True)

    def truncated_search():
        os.truncate(path, 4096)
        mapped.search(np.ones(64), k=1)

    yield "search of a memory-mapped index truncated by another process", (RuntimeError,), truncated_search
    yield "save into a missing folder", (FileNotFoundError,), \
        lambda: big.save(os.path.join(tmp, "missing", "x.index"))
    corrupt = os.path.join(tmp, "c.index")
    big.save(corrupt)
    with open(corrupt, "r+b") as f:
        f.seek(200)
        f.write(b"\xff")
    yield "load of an index with a flipped byte", (ValueError,), lambda: mr.FlatIndex.load(corrupt)

    import targets

    for regression in sorted(glob.glob(os.path.join(HERE, "fuzz", "regressions", "*"))):
        name = os.path.basename(regression)
        target = name.split("-")[0]
        with open(regression, "rb") as f:
            data = f.read()
        yield f"fuzz finding `{name}`", targets.ALLOWED[target], (lambda t=target, d=data: targets.TARGETS[t](d))


def main() -> int:
    ok = True
    print("| bad input | exception | message (start) |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for what, expected, action in cases(tmp):
            try:
                action()
                got, message, good = "nothing", "", False
            except Exception as e:  # noqa: BLE001 - the point is to see what each raises
                got, message, good = type(e).__name__, str(e).replace("\n", " ")[:110], isinstance(e, expected)
            ok = ok and good
            print(f"| {what} | {got}{'' if good else ' **FAIL**'} | {message.replace('|', '/')} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
