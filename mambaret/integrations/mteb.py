"""MTEB's encoder protocol over a MambaEncoder.

    import mteb
    model = MtebEncoder(encoder)
    mteb.evaluate(model, tasks)      # or MTEB(tasks=...).run(model) in mteb 1.x

encode(sentences, task_name=..., prompt_type=...) returns a float32 NumPy array. Queries
("query" prompt type) get the model's query prompt, documents its document prompt, unless
`prompts` names one for the task (keys as MTEB orders them: "Task-query", "Task",
"Retrieval-query", "Retrieval", "query"). mteb 2.x's form, batches of {"text": [...]} with
task_metadata=..., is understood too.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

import numpy as np

from ._common import check_encode_kwargs, load_encoder

PROMPT_TYPES = ("query", "document")


def _prompt_type_name(prompt_type) -> str | None:
    if prompt_type is None:
        return None
    name = getattr(prompt_type, "value", prompt_type)  # mteb's PromptType enum, or its value
    if name not in PROMPT_TYPES:
        raise ValueError(f"prompt_type must be one of {PROMPT_TYPES} or None, got {prompt_type!r}")
    return name


def _texts(sentences) -> list[str]:
    if isinstance(sentences, str):
        raise TypeError("encode takes a list of sentences, not a single str")
    if not isinstance(sentences, Iterable) or isinstance(sentences, (bytes, Mapping)):
        raise TypeError(f"expected a list of str, got {type(sentences).__name__}")
    texts: list[str] = []
    for i, item in enumerate(sentences):
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, Mapping) and "text" in item:  # mteb 2.x: DataLoader batches {"text": [...]}
            batch = item["text"]
            if not isinstance(batch, (list, tuple)) or not all(isinstance(t, str) for t in batch):
                raise TypeError(f"item {i}: a batch's 'text' must be a list of str")
            texts.extend(batch)
        else:
            raise TypeError(f"item {i}: expected a str or a batch with a 'text' list, got {type(item).__name__}")
    return texts


class MtebEncoder:
    """The MTEB encoder protocol.

    model: a MambaEncoder, or a path (or hub id) loaded with model_kwargs. prompts: optional
    instructions keyed, most specific first, by "TaskName-query", "TaskName", "TaskType-query",
    "TaskType", or "query" / "document". encode_kwargs: defaults for every call (e.g. batch_size, normalize_embeddings).
    """

    def __init__(self, model, *, prompts: dict[str, str] | None = None, model_kwargs: dict[str, Any] | None = None,
                 **encode_kwargs: Any):
        self.encoder = load_encoder(model, model_kwargs)
        self.prompts = dict(prompts or {})
        for key, value in self.prompts.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("prompts must map str to str")
        self.encode_kwargs = check_encode_kwargs(self.encoder, encode_kwargs, "MtebEncoder")

    def _prompt(self, task: str | None, task_type: str | None, prompt_type: str | None) -> str | None:
        # MTEB's order: task + prompt type, task, task type + prompt type, task type, prompt type
        keys = []
        for name in (task, task_type):
            if name and prompt_type:
                keys.append(f"{name}-{prompt_type}")
            if name:
                keys.append(name)
        if prompt_type:
            keys.append(prompt_type)
        return next((self.prompts[k] for k in keys if k in self.prompts), None)

    @property
    def mteb_model_meta(self):
        """mteb 2.x asks for this to name the results; only mteb itself reads it."""
        from mteb.models import ModelMeta

        name = os.path.basename(os.path.normpath(self.encoder.model_dir or "model"))
        return ModelMeta.create_empty(overwrites={"name": f"mambaret/{name}", "revision": "local",
                                                 "embed_dim": self.encoder.embedding_dim})

    def encode(self, sentences, *, task_name: str | None = None, prompt_type=None, task_metadata=None,
               hf_split: str | None = None, hf_subset: str | None = None, **kwargs: Any) -> np.ndarray:
        del hf_split, hf_subset  # mteb 2.x passes them; the embedding does not depend on them
        texts = _texts(sentences)
        task = task_name if task_name is not None else getattr(task_metadata, "name", None)
        task_type = getattr(task_metadata, "type", None)
        kind = _prompt_type_name(prompt_type)
        # the protocol returns NumPy whatever an evaluator asks for
        kwargs.pop("convert_to_tensor", None)
        kwargs.pop("convert_to_numpy", None)
        kwargs = {**self.encode_kwargs, **kwargs}
        if "prompt" not in kwargs and "prompt_name" not in kwargs:
            prompt = self._prompt(task, task_type, kind)
            if prompt is not None:
                kwargs["prompt"] = prompt
        if kind == "query":
            out = self.encoder.encode_query(texts, **kwargs)
        elif kind == "document":
            out = self.encoder.encode_document(texts, **kwargs)
        else:
            out = self.encoder.encode(texts, **kwargs)
        return np.asarray(out, dtype=np.float32)

    @staticmethod
    def similarity(a, b) -> np.ndarray:
        """Cosine similarity of every row of a with every row of b."""
        a = _unit_rows(a)
        b = _unit_rows(b)
        return a @ b.T

    @staticmethod
    def similarity_pairwise(a, b) -> np.ndarray:
        """Cosine similarity of a[i] with b[i]."""
        a = _unit_rows(a)
        b = _unit_rows(b)
        if a.shape != b.shape:
            raise ValueError(f"pairwise similarity needs equal shapes, got {a.shape} and {b.shape}")
        return np.einsum("ij,ij->i", a, b)


def _unit_rows(x) -> np.ndarray:
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
