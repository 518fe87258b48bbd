"""Inputs that cost too much: refused before allocating, or served in bounded memory."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mambaret as mr
from mambaret import _C
from mambaret._memory import machine_bytes
from mambaret.arch.random_model import write_random_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def small_model(tmp_path):
    return write_random_model(str(tmp_path / "m"), hidden_size=16, num_hidden_layers=2, vocab_size=256)


def edit_config(folder, **fields):
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.update(fields)
    with open(path, "w") as f:
        json.dump(cfg, f)


def test_config_with_more_layers_and_width_than_memory_is_refused(small_model):
    # 65,536 layers of a 4M-wide mixer: exabytes of weights; the checkpoint holds 2 small layers
    edit_config(small_model, num_hidden_layers=65536, intermediate_size=1 << 22)
    with pytest.raises(MemoryError, match="weights would need"):
        mr.MambaEncoder.from_pretrained(small_model)


def test_config_wider_than_the_embedding_is_refused_before_allocating(small_model):
    edit_config(small_model, hidden_size=1 << 20)
    with pytest.raises(ValueError, match="hidden_size"):
        mr.MambaEncoder.from_pretrained(small_model)


def test_core_model_refuses_a_config_beyond_memory():
    cfg = dict(hidden_size=1 << 20, num_hidden_layers=1 << 16, vocab_size=1 << 31, intermediate_size=1 << 22,
               state_size=16, conv_kernel=4, time_step_rank=64, layer_norm_epsilon=1e-5,
               use_bias=False, use_conv_bias=True)
    with pytest.raises(MemoryError):
        _C.Model(cfg)


def test_search_whose_results_exceed_memory_is_refused():
    index = mr.FlatIndex(4)
    index.add(np.eye(4))
    k = machine_bytes() // 12 + 1
    with pytest.raises(MemoryError, match="search results"):
        index.search(np.ones((1, 4)), k=k)


def long_input(*argv) -> dict:
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "long_inputs.py"), *argv],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_long_document_encodes_in_bounded_memory():
    # all activations at once would be tokens x 2E floats per buffer (100,000 x 64 x 4 = 25 MB);
    # micro-batches of 1,024 tokens need a fraction of a megabyte
    r = long_input("document", "--tokens", "100000", "--hidden", "16", "--max-tokens", "1024", "--threads", "1")
    assert r["added_beyond_input"] < 8 * 2**20, r


def test_large_query_batch_searches_in_tiles():
    # every score at once would be 50,000 x 4,000 floats (800 MB)
    r = long_input("queries", "--rows", "50000", "--dim", "16", "--index-rows", "4000", "--threads", "1")
    assert r["added_beyond_output"] < 48 * 2**20, r
