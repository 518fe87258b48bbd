"""Writes the seed corpora (bench/fuzz/corpus/<target>/): small valid inputs for each reader.

    python bench/fuzz/make_seeds.py

Seeds are committed; rerun this only when a format changes. Every seed is a few kilobytes at most.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from mambaret import FlatIndex  # noqa: E402
from mambaret.arch.random_model import random_config, random_weights  # noqa: E402


def safetensors_bytes(tensors: dict) -> bytes:
    from safetensors.numpy import save

    return save(tensors)


def tiny_tokenizer() -> bytes:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "<|padding|>": 1, "a": 2, "state": 3, "space": 4, "model": 5, "[UNK]": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok.to_str().encode()


def seeds() -> dict:
    cfg = random_config(hidden_size=4, num_hidden_layers=1, vocab_size=8, state_size=2, conv_kernel=2)
    weights = random_weights(cfg, seed=0)
    config_json = json.dumps(cfg).encode()
    ssm_config = json.dumps({"d_model": 4, "n_layer": 1, "vocab_size": 8, "ssm_cfg": {"d_state": 2, "d_conv": 2},
                             "rms_norm": True, "pad_vocab_size_multiple": 8}).encode()
    model = safetensors_bytes(weights)

    def index_bytes(string_ids: bool) -> bytes:
        index = FlatIndex(3)
        index.add(np.arange(12, dtype=np.float32).reshape(4, 3) / 10,
                  ids=[f"d{i}" for i in range(4)] if string_ids else [5, 9, 2, 7])
        with tempfile.TemporaryDirectory() as folder:
            index.save(os.path.join(folder, "x"))
            with open(os.path.join(folder, "x"), "rb") as f:
                return f.read()

    npy = io.BytesIO()
    np.save(npy, np.arange(6, dtype=np.float32).reshape(2, 3))

    def batch(tokens, offsets, pooling=0, max_tokens=4) -> bytes:
        head = bytes([len(offsets), pooling, max_tokens - 1, 0])
        return head + np.asarray(offsets, "<i8").tobytes() + np.asarray(tokens, "<i4").tobytes()

    return {
        "safetensors": {"tiny": model, "one": safetensors_bytes({"w": np.ones((2, 2), np.float32)}),
                        "f16": safetensors_bytes({"h": np.ones(3, np.float16)})},
        "config": {"hf": config_json, "mamba_ssm": ssm_config},
        "tokenizer": {"wordlevel": tiny_tokenizer()},
        "model_folder": {"tiny": struct.pack("<I", len(config_json)) + config_json + model},
        "flat_index": {"int_ids": index_bytes(False), "str_ids": index_bytes(True)},
        "npy_index": {"matrix": npy.getvalue()},
        "trec_topics": {"closed": b"<top>\n<num> Number: 401\n<title> state space\n<desc> Description:\nmodels\n</top>\n",
                        "tags": b"<top><num>2</num><title>dense retrieval</title></top>\n"},
        "trec_docs": {"docs": b"<DOC>\n<DOCNO> d1 </DOCNO>\n<TEXT>\nstate space\n</TEXT>\n</DOC>\n"
                              b"<DOC>\n<DOCNO>d2</DOCNO>\nplain text\n</DOC>\n"},
        "trec_qrels": {"qrels": b"1 0 d1 1\n1 0 d2 0\n2 0 d1 2\n"},
        "trec_run": {"run": b"1 Q0 d1 1 2.5 tag\n1 Q0 d2 2 1.0 tag\n2 Q0 d1 1 -0.5 tag\n"},
        "beir_corpus": {"corpus": b'{"_id": "d1", "title": "t", "text": "state space"}\n{"_id": "d2", "text": "x"}\n'},
        "beir_queries": {"queries": b'{"_id": "q1", "text": "what is a scan"}\n'},
        "beir_qrels": {"qrels": b"query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n"},
        "packed_batch": {"two": batch([1, 2, 3, 4, 5], [0, 2, 5]), "mean": batch([7, 8], [0, 2], pooling=1),
                         "empty": batch([], [0])},
        "token_ids": {"lists": b"[[1, 2, 3], [4], [5, 6]]", "one": b"[9, 10]"},
        "train_jsonl": {"pairs": b'{"query": "what is a scan", "positive": "a prefix sum"}\n\n'
                                 b'{"query": "ssm", "positive": "state space model", "negatives": ["attention"]}\n',
                        "scores": b'{"query": "q", "positive": "p", "negatives": ["n1", "n2"], "scores": [0.9, 0.2, 1]}\n'},
    }


def main() -> None:
    corpus = os.path.join(HERE, "corpus")
    shutil.rmtree(corpus, ignore_errors=True)
    for target, files in seeds().items():
        os.makedirs(os.path.join(corpus, target))
        for name, data in files.items():
            with open(os.path.join(corpus, target, name), "wb") as f:
                f.write(data)
    print(f"wrote seeds for {len(seeds())} targets under {corpus}")


if __name__ == "__main__":
    main()
