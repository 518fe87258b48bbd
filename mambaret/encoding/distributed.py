"""Encoding corpora on a Ray cluster (``pip install ".[ray]"`` in the repository).

:func:`encode` maps a Ray dataset of texts through an actor pool (``ray.data`` ``map_batches``),
each actor holding one :class:`~mambaret.MambaEncoder` whose threads are the actor's CPUs, and
returns a Ray dataset of ``id`` + ``embedding`` rows in the input's order. Ray restarts an actor
that dies and retries its batches. :func:`write_shards` writes such a dataset as Parquet shards
(see :mod:`mambaret.encoding.shards`), in order, from the calling process.

    import mambaret.encoding.distributed as mrd
    ds = mrd.encode("corpus.jsonl", "path/to/model", num_actors=8, normalize_embeddings=True)
    mrd.write_shards(ds, "embeddings/")
    built = mambaret.build_index("embeddings/", "hnsw")
"""
from __future__ import annotations

import os
import socket
import tempfile
from typing import Optional, Sequence, Union

import numpy as np

from .shards import ShardWriter

__all__ = ["encode", "write_shards", "connect"]

_FORMATS = ("auto", "trec", "jsonl", "text")


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError("mambaret.distributed needs Ray: pip install \"ray[data]\" "
                          "(or pip install \".[ray]\" in the mambaret repository)") from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fails fast (ConnectionError) when nothing listens at host:port; Ray itself waits long."""
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"Ray address must be host:port (or ray://host:port, 'auto'), got {address!r}")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"cannot reach a Ray cluster at {address}: {e}") from None


def connect(address: Optional[str] = None, quiet: bool = False):
    """Uses the Ray connection this process has, else connects to ``address``, else starts a
    local Ray. Returns the ray module. quiet: only Ray's errors and Ray Data's warnings reach
    the terminal, no INFO lines (the command line asks for it)."""
    ray = _ray()
    if quiet:
        import logging

        # Ray Data logs its progress and plan every few seconds when not on a terminal
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    if ray.is_initialized():
        return ray
    if address is not None and address != "auto":
        _check_reachable(address)
    init = {"logging_level": "ERROR"} if quiet else {}
    ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, **init)
    return ray


def _check_model_folder(path: str) -> str:
    from ..arch.paths import resolve_model_path

    path = os.path.abspath(os.fspath(resolve_model_path(path)))
    if not os.path.isdir(path):
        raise ValueError(f"model folder {path!r} does not exist or is not a folder")
    if not os.access(path, os.R_OK | os.X_OK) or not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"model folder {path!r} is not readable or has no config.json")
    return path


def _model_files(path: str) -> dict:
    """Every file of a model folder, to ship through the object store."""
    files = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                files[os.path.relpath(full, path)] = f.read()
    return files


class _EncoderActor:
    """One replica of the encoder; Ray Data calls it on batches of rows."""

    def __init__(self, model, threads: int, text_column: str, id_column: str, batch_size: int,
                 normalize_embeddings: bool, encoder_kwargs: dict):
        from .encoder import MambaEncoder

        import ray

        self._folder = None
        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        if isinstance(model, dict):  # shipped files: written to a folder of this node
            self._folder = tempfile.TemporaryDirectory(prefix="mambaret-model-")
            for rel, data in model.items():
                full = os.path.join(self._folder.name, rel)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                with open(full, "wb") as f:
                    f.write(data)
            model = self._folder.name
        if not os.path.isdir(model) or not os.access(model, os.R_OK):
            raise RuntimeError(f"model folder {model!r} is not readable on node {socket.gethostname()}: "
                               "put it where every node can read it, or pass ship_model=True")
        self.encoder = MambaEncoder.from_pretrained(model, threads=threads, **encoder_kwargs)
        self.text_column, self.id_column = text_column, id_column
        self.batch_size, self.normalize = batch_size, normalize_embeddings

    def __call__(self, batch: dict) -> dict:
        texts = [str(t) for t in batch[self.text_column]]
        embeddings = self.encoder.encode(texts, batch_size=self.batch_size, show_progress_bar=False,
                                         normalize_embeddings=self.normalize)
        return {"id": batch[self.id_column], "embedding": np.asarray(embeddings, dtype=np.float32).reshape(
            len(texts), self.encoder.embedding_dim)}


def _read_corpus_files(paths: Sequence[str], fmt: str):
    """(ids, texts) of our corpus formats: TREC <DOC>, BEIR corpus.jsonl, one text per line."""
    from ..evaluation import datasets
    from .corpus import text_lines

    ids, texts = [], []
    for path in paths:
        if not os.path.isfile(path):
            raise ValueError(f"no corpus file {path!r}")
        kind = fmt
        if kind == "auto":
            kind = "jsonl" if path.endswith(".jsonl") else "trec" if path.endswith((".trec", ".xml", ".sgml")) \
                else "text"
        if kind == "trec":
            docs = datasets.load_trec_docs(path)
            ids += list(docs)
            texts += list(docs.values())
        elif kind == "jsonl":
            corpus = datasets.load_beir_corpus(path)
            ids += list(corpus)
            texts += [datasets.document_text(d) for d in corpus.values()]
        else:
            lines = text_lines(path)
            ids += [f"{len(ids) + i}" for i in range(len(lines))]
            texts += lines
    if len(set(ids)) != len(ids):
        raise ValueError("the corpus files repeat document ids")
    return ids, texts


def _as_dataset(ray, dataset, fmt, text_column, id_column, blocks):
    if isinstance(dataset, ray.data.Dataset):
        return dataset
    if isinstance(dataset, (str, os.PathLike)):
        dataset = [dataset]
    if not isinstance(dataset, (list, tuple)) or not all(isinstance(p, (str, os.PathLike)) for p in dataset):
        raise ValueError("dataset must be a ray.data.Dataset or corpus file paths")
    import pyarrow as pa

    ids, texts = _read_corpus_files([os.fspath(p) for p in dataset], fmt)
    if not ids:
        raise ValueError("the corpus holds no documents")
    table = pa.table({id_column: ids, text_column: texts})
    step = max(1, -(-len(ids) // blocks))
    return ray.data.from_arrow([table.slice(i, step) for i in range(0, len(ids), step)])


def encode(dataset, model: Union[str, os.PathLike], text_column: str = "text", id_column: str = "id",
           batch_size: int = 32, num_actors: Optional[int] = None, cpus_per_actor: int = 1,
           normalize_embeddings: bool = False, address: Optional[str] = None, ship_model: bool = False,
           format: str = "auto", rows_per_call: Optional[int] = None, actor_class=None, **encoder_kwargs):
    """A Ray dataset of ``id`` + ``embedding`` (float32 [dim]) rows, in the input's order.

    - ``dataset``: a ``ray.data.Dataset`` with ``text_column`` and ``id_column``, or corpus file
      paths (TREC ``<DOC>``, BEIR ``corpus.jsonl``, one text per line; ``format`` forces one).
    - ``model``: the model folder ("default": the packaged ``mambaret.DEFAULT_MODEL``); every node
      reads it from this path, unless ``ship_model=True`` sends its files through the object store.
    - ``num_actors``: encoder replicas (default: the cluster's CPUs / ``cpus_per_actor``), each
      with ``cpus_per_actor`` CPUs and as many threads; ``batch_size``: texts per engine call;
      ``rows_per_call``: rows Ray hands an actor at once (default ``4 * batch_size``).
    - ``normalize_embeddings``: L2-normalise, as in :meth:`MambaEncoder.encode`;
      ``encoder_kwargs`` go to :meth:`MambaEncoder.from_pretrained` (max_length, max_tokens, ...).
    - ``actor_class``: what runs on the actors, a subclass of the default (for instrumentation).
    - ``address``: used only when this process is not connected to Ray yet; without it a local
      Ray starts.

    The result is lazy: it is computed when consumed (``write_shards``, ``iter_batches``, ...).
    """
    if format not in _FORMATS:
        raise ValueError(f"format must be one of {', '.join(_FORMATS)}, got {format!r}")
    for name, value in (("batch_size", batch_size), ("cpus_per_actor", cpus_per_actor)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    folder = _check_model_folder(model)
    ray = connect(address)
    if num_actors is None:
        num_actors = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_actor))
    if isinstance(num_actors, bool) or not isinstance(num_actors, int) or num_actors <= 0:
        raise ValueError(f"num_actors must be a positive integer, got {num_actors!r}")
    ds = _as_dataset(ray, dataset, format, text_column, id_column, blocks=4 * num_actors)
    columns = ds.columns()
    missing = [c for c in (text_column, id_column) if c not in columns]
    if missing:
        raise ValueError(f"the dataset has no column {missing[0]!r} (columns: {', '.join(columns)})")
    ds.context.execution_options.preserve_order = True  # rows leave in the order they came
    model_arg = ray.put(_model_files(folder)) if ship_model else folder
    return ds.map_batches(
        actor_class or _EncoderActor,
        fn_constructor_kwargs={"model": model_arg, "threads": cpus_per_actor, "text_column": text_column,
                               "id_column": id_column, "batch_size": batch_size,
                               "normalize_embeddings": normalize_embeddings, "encoder_kwargs": encoder_kwargs},
        batch_size=rows_per_call or 4 * batch_size, batch_format="numpy", num_cpus=cpus_per_actor,
        compute=ray.data.ActorPoolStrategy(size=num_actors), zero_copy_batch=True,
    )


def write_shards(ds, folder, rows_per_shard: int = 100_000) -> dict:
    """Writes a dataset of ``id`` + ``embedding`` rows (from :func:`encode`) as Parquet shards in
    its order; returns the manifest. The folder is complete only once its manifest exists; on
    failure the shards written so far are removed and the error is raised."""
    _ray()
    ds.context.execution_options.preserve_order = True
    writer = ShardWriter(folder, rows_per_shard=rows_per_shard)
    try:
        for batch in ds.iter_batches(batch_size=min(rows_per_shard, 8192), batch_format="numpy"):
            writer.write(batch["id"], np.asarray(batch["embedding"], dtype=np.float32))
        return writer.close()
    except BaseException:
        for shard in writer.shards:
            path = os.path.join(writer.folder, shard["file"])
            if os.path.exists(path):
                os.remove(path)
        raise
