"""Fuzz targets: one per reader of outside bytes.

Each target takes arbitrary bytes, hands them to one reader (through a file where the reader
reads files), uses what it returns, and lets through only the exceptions that reader documents
for bad input (``ValueError`` and its subclasses, which include ``UnicodeDecodeError`` and
``json.JSONDecodeError``). Any other exception is a finding; a crash of the interpreter (or an
AddressSanitizer report in the instrumented build) is a worse one.

Used by ``run.py`` (atheris / libFuzzer) and by the tests (seed corpora replayed, short runs).
"""
from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import struct
import tempfile

import numpy as np

_SCRATCH = tempfile.mkdtemp(prefix="mambaret-fuzz-")
atexit.register(shutil.rmtree, _SCRATCH, True)  # (run.py also points TMPDIR at a folder it removes)


def _file(name: str, data: bytes) -> str:
    path = os.path.join(_SCRATCH, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _folder(name: str, files: dict) -> str:
    folder = os.path.join(_SCRATCH, name)
    os.makedirs(folder, exist_ok=True)
    for entry in os.listdir(folder):
        os.remove(os.path.join(folder, entry))
    for file_name, data in files.items():
        with open(os.path.join(folder, file_name), "wb") as f:
            f.write(data)
    return folder


# ------------------------------------------------------------------ model files

def safetensors(data: bytes) -> None:
    from mambaret.arch.weights import _read_safetensors

    for name, tensor in _read_safetensors(_file("model.safetensors", data)):
        float(np.asarray(tensor.array, dtype=np.float64).sum())  # touch every byte it claims
        tensor.copied()


def config(data: bytes) -> None:
    from mambaret.arch.config import read_config

    dims = read_config(_folder("config", {"config.json": data}))
    dims.core_config(vocab_rows=dims.vocab_size)


def tokenizer(data: bytes) -> None:
    from mambaret.encoding.tokenization import TextTokenizer, TruncationStats

    tok = TextTokenizer.from_file(_file("tokenizer.json", data), eos_token_id=0)
    tok.encode(["a state space model", "", "Ünïcödé ✓"], max_length=8, stats=TruncationStats())


def model_folder(data: bytes) -> None:
    """A whole checkpoint: the first 4 bytes split the input into config.json and safetensors."""
    from mambaret.arch.loader import load_core_model

    if len(data) < 4:
        raise ValueError("too short")
    cut = struct.unpack("<I", data[:4])[0] % (len(data) - 3)
    folder = _folder("model", {"config.json": data[4:4 + cut], "model.safetensors": data[4 + cut:]})
    model, _ = load_core_model(folder)
    model.forward(np.array([1, 2, 0], dtype=np.int32), np.array([0, 3], dtype=np.int64))


# ------------------------------------------------------------------ index

def flat_index(data: bytes) -> None:
    from mambaret import FlatIndex

    path = _file("x.index", data)
    for mmap in (False, True):
        index = FlatIndex.load(path, mmap=mmap, threads=1)
        index.search(np.ones((2, index.dim), dtype=np.float32), k=3)
        del index


def npy_index(data: bytes) -> None:
    from mambaret import FlatIndex

    index = FlatIndex.from_npy(_file("x.npy", data), threads=1)
    index.search(np.ones((1, index.dim), dtype=np.float32), k=2)


# ------------------------------------------------------------------ collections

def trec_topics(data: bytes) -> None:
    from mambaret.evaluation.datasets import load_trec_topics

    load_trec_topics(_file("topics.txt", data))


def trec_docs(data: bytes) -> None:
    from mambaret.evaluation.datasets import load_trec_docs

    load_trec_docs(_file("docs.trec", data))


def trec_qrels(data: bytes) -> None:
    from mambaret.evaluation.datasets import load_qrels

    load_qrels(_file("qrels.txt", data))


def trec_run(data: bytes) -> None:
    from mambaret import evaluate
    from mambaret.evaluation.datasets import load_trec_run

    run = load_trec_run(_file("run.txt", data))
    if run:
        evaluate(run, {next(iter(run)): {"d": 1}}, ["ndcg@10", "mrr@10", "recall@100"])


def beir_corpus(data: bytes) -> None:
    from mambaret.evaluation.datasets import document_text, load_beir_corpus

    for doc in load_beir_corpus(_file("corpus.jsonl", data)).values():
        document_text(doc)


def beir_queries(data: bytes) -> None:
    from mambaret.evaluation.datasets import load_beir_queries

    load_beir_queries(_file("queries.jsonl", data))


def beir_qrels(data: bytes) -> None:
    from mambaret.evaluation.datasets import load_beir_qrels

    load_beir_qrels(_file("test.tsv", data))


def train_jsonl(data: bytes) -> None:
    """The training JSONL reader (query / positive / negatives / scores lines)."""
    from mambaret.train.data import load_jsonl_pairs

    for example in load_jsonl_pairs(_file("train.jsonl", data)):
        assert example.query and example.positive


# ------------------------------------------------------------------ the C core's input checks

_MODEL = None


def _tiny_model():
    global _MODEL
    if _MODEL is None:
        from mambaret.arch.loader import load_core_model
        from mambaret.arch.random_model import write_random_model

        folder = write_random_model(os.path.join(_SCRATCH, "tiny"), hidden_size=8, num_hidden_layers=1,
                                    vocab_size=64)
        _MODEL, _ = load_core_model(folder)
    return _MODEL


def packed_batch(data: bytes) -> None:
    """Token ids and offsets as the bytes say, straight into the binding's forward."""
    model = _tiny_model()
    if len(data) < 4:
        raise ValueError("too short")
    n_offsets = data[0] % 9
    pooling = ("last", "mean", "all")[data[1] % 3]
    max_tokens = 1 + data[2] % 16
    rest = data[4:]
    offsets = np.frombuffer(rest[:8 * n_offsets].ljust(8 * n_offsets, b"\0"), dtype="<i8").copy()
    if data[3] & 1:  # mostly small offsets, so that valid batches are found
        offsets = offsets % 32
    tokens = np.frombuffer(rest[8 * n_offsets:][: 4 * (len(rest[8 * n_offsets:]) // 4)], dtype="<i4").copy()
    if data[3] & 2:
        tokens = tokens % 70 - 2  # near the vocabulary's edges
    out = model.forward(tokens, offsets, pooling=pooling, max_tokens=max_tokens, threads=1)
    assert np.isfinite(out).all()


def token_ids(data: bytes) -> None:
    """Token-id lists through the encoder's Python checks into the C core."""
    from mambaret.encoding.encoder import MambaEncoder
    from mambaret.arch.config import read_config

    model = _tiny_model()
    encoder = MambaEncoder(model, read_config(os.path.join(_SCRATCH, "tiny")), threads=1, max_tokens=7)
    ids = json.load(io.BytesIO(data))
    encoder.encode(ids, batch_size=3)


TARGETS = {f.__name__: f for f in (safetensors, config, tokenizer, model_folder, flat_index, npy_index,
                                     trec_topics, trec_docs, trec_qrels, trec_run, beir_corpus,
                                     beir_queries, beir_qrels, packed_batch, token_ids, train_jsonl)}

# what each target may raise on bad input; anything else is a finding
ALLOWED = {name: (ValueError,) for name in TARGETS}
# a Python object of the wrong type given to an API is a TypeError by convention
ALLOWED["token_ids"] = (ValueError, TypeError)


def run_one(name: str, data: bytes) -> None:
    """One input through one target; raises only on a finding."""
    try:
        TARGETS[name](data)
    except ALLOWED[name]:
        pass
