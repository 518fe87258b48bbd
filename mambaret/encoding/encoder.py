"""MambaEncoder: a Mamba-1 bi-encoder with sentence-transformers' calling conventions."""
from __future__ import annotations

import os
import sys
from typing import Any, Iterable, Sequence

import numpy as np

from .. import _C
from .._native import default_threads
from ..arch.config import MambaDims
from ..arch.exits import UntrainedWarnings, check_exit_layer, check_truncate_dim, trained_exits
from ..arch.loader import load_core_model
from ..arch.paths import find_model_dir
from .tokenization import (PackedBatch, TextTokenizer, TruncationStats, apply_eos, check_poolable,
                           token_budget_batches, truncate_ids, warn_truncation)

POOLING_MODES = ("last", "mean")


def _is_interactive() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class MambaEncoder:
    """Encodes texts (or token ids) into L2-normalisable embeddings with a Mamba-1 backbone.

    The embedding is the final-norm hidden state at each input's last token (EOS appended to
    texts) or, with pooling="mean", the mean over its tokens.
    """

    def __init__(self, model: _C.Model, dims: MambaDims, tokenizer: TextTokenizer | None = None, *,
                 max_length: int | None = None, max_tokens: int = 8192, threads: int | None = None,
                 pooling: str = "last", normalize: bool = False, prompts: dict[str, str] | None = None,
                 default_prompt_name: str | None = None, model_dir: str | None = None,
                 truncate_dim: int | None = None, exit_layer: int | None = None):
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
            raise ValueError(f"max_length must be a positive int or None, got {max_length!r}")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
            raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
        self.model = model
        self.dims = dims
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_tokens = max_tokens
        self.threads = default_threads(threads)
        self.pooling = pooling
        self.normalize = normalize
        self.prompts = dict(prompts or {})
        if default_prompt_name is not None and default_prompt_name not in self.prompts:
            raise ValueError(f"default_prompt_name {default_prompt_name!r} is not in prompts {sorted(self.prompts)}")
        self.default_prompt_name = default_prompt_name
        self.model_dir = model_dir
        self.device = "cpu"
        self.truncation = TruncationStats()
        # depth and width on demand (mambaret.arch.exits): the defaults of every encode call
        self.truncate_dim = check_truncate_dim(truncate_dim, dims.hidden_size)
        self.exit_layer = check_exit_layer(exit_layer, dims.num_hidden_layers)
        self.matryoshka_dims, self.exit_layers = trained_exits(model_dir, dims.hidden_size, dims.num_hidden_layers)
        self._untrained = UntrainedWarnings(self.matryoshka_dims, self.exit_layers, dims.hidden_size,
                                            dims.num_hidden_layers)
        self._untrained.check(self.truncate_dim, self.exit_layer, stacklevel=4)

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, device: str = "cpu", max_length: int | None = None,
                        max_tokens: int = 8192, threads: int | None = None, *, pooling: str | None = None,
                        normalize: bool | None = None, tokenizer_path: str | None = None,
                        prompts: dict[str, str] | None = None, default_prompt_name: str | None = None,
                        revision: str | None = None, cache_dir: str | None = None,
                        dtype: str = "bfloat16", truncate_dim: int | None = None,
                        exit_layer: int | None = None, quantize: str | None = None) -> "MambaEncoder":
        """Loads a HF-format Mamba checkpoint directory (or hub id, with huggingface_hub).
        "default" is the packaged default model (mambaret.DEFAULT_MODEL) unless a path of that
        name exists in the working directory.

        device: "cpu" (the C core) or "cuda" / "cuda:N" (the optional CUDA module). threads: our
        threads and the BLAS's together; default OMP_NUM_THREADS, else the available cores.
        dtype: the GPU's compute dtype, "bfloat16", "float16" or "float32" (ignored on the CPU,
        which computes in float32). On the GPU a larger max_tokens (e.g. 65536) fills it better.
        truncate_dim / exit_layer: every encode call's defaults (see encode).
        quantize: "int8" runs in_proj and out_proj in int8 on the CPU (W8A8, mambaret/arch/int8.py);
        a folder written by `mambaret quantize` is int8 without it.
        """
        device = str(device)
        if device != "cpu" and device != "cuda" and not device.startswith("cuda:"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if device != "cpu" and quantize is not None:
            raise ValueError("quantize='int8' runs on the CPU only (device='cpu')")
        if device != "cpu":
            from .cuda import require_cuda

            require_cuda()  # fail before reading the checkpoint
        model_dir = find_model_dir(str(model_name_or_path), revision, cache_dir)
        # A sentence-transformers folder: its modules say where the checkpoint is, how to pool,
        # whether to normalise, and which prompts to use; explicit arguments win.
        from ..arch.st_folder import is_sentence_transformers_folder, read_folder

        if is_sentence_transformers_folder(model_dir):
            folder = read_folder(model_dir)
            model_dir = folder.checkpoint_dir
            pooling = pooling or folder.pooling
            normalize = folder.normalize if normalize is None else normalize
            if prompts is None:
                prompts = folder.prompts
                default_prompt_name = default_prompt_name or folder.default_prompt_name
            max_length = folder.max_seq_length if max_length is None else max_length
        model, dims = load_core_model(model_dir, quantize=quantize)
        if device != "cpu" and model.config["int8"]:
            raise ValueError("int8 weights run on the CPU only; load the float checkpoint for the GPU")
        if device != "cpu":
            from .cuda_backend import upload

            model = upload(model, device, dtype)
        tokenizer_file = tokenizer_path or os.path.join(model_dir, "tokenizer.json")
        tokenizer = None
        if os.path.isfile(tokenizer_file):
            tokenizer = TextTokenizer.from_file(tokenizer_file, dims.eos_token_id, model_dir)
        elif tokenizer_path:
            raise FileNotFoundError(f"no tokenizer file {tokenizer_path!r}")
        encoder = cls(model, dims, tokenizer, max_length=max_length, max_tokens=max_tokens, threads=threads,
                      pooling=pooling or "last", normalize=bool(normalize), prompts=prompts,
                      default_prompt_name=default_prompt_name, model_dir=model_dir,
                      truncate_dim=truncate_dim, exit_layer=exit_layer)
        encoder.device = device
        return encoder

    # -- properties ---------------------------------------------------------------------------

    def get_sentence_embedding_dimension(self) -> int:
        """The size of encode's embeddings: truncate_dim when set, else hidden_size."""
        return self.truncate_dim or self.dims.hidden_size

    @property
    def embedding_dim(self) -> int:
        return self.get_sentence_embedding_dimension()

    def __repr__(self) -> str:
        d = self.dims
        return (f"MambaEncoder(d={d.hidden_size}, layers={d.num_hidden_layers}, pooling={self.pooling!r}, "
                f"threads={self.threads}, max_tokens={self.max_tokens}, blas={self.model.blas!r})")

    def similarity(self, embeddings1, embeddings2) -> np.ndarray:
        """Cosine similarity of every row of embeddings1 with every row of embeddings2, float32
        [n1, n2] (sentence-transformers' model.similarity; the model is trained for cosine)."""
        from ..search.similarity import similarity

        return similarity(embeddings1, embeddings2)

    def release_memory(self) -> None:
        """Frees the working memory kept from the last encode call (it is reused by the next one,
        which saves the page faults of a fresh allocation; a long-lived idle encoder may not
        want to hold it)."""
        release = getattr(self.model, "release_workspace", None)
        if release is not None:
            release()

    # -- tokenization -------------------------------------------------------------------------

    def tokenize(self, inputs: Sequence[str | Sequence[int]], add_eos: bool | None = None) -> list[list[int]]:
        """Token ids per input: texts get EOS appended; id lists are used as given unless add_eos.
        Only encoding counts into self.truncation: tokenizing is looking, not encoding."""
        ids = self._token_ids(inputs, add_eos, TruncationStats())
        return [x.tolist() if isinstance(x, np.ndarray) else x for x in ids]

    def _token_ids(self, inputs, add_eos: bool | None, stats: TruncationStats | None = None
                   ) -> list[list[int] | np.ndarray]:
        """tokenize's work, with integer-array inputs kept as int32 arrays; truncation is
        counted into stats (default self.truncation)."""
        stats = self.truncation if stats is None else stats
        out: list = []
        texts_at: list[int] = []
        for i, item in enumerate(inputs):
            if isinstance(item, str):
                texts_at.append(i)
                out.append([])
            else:
                ids = _as_ids(item, i)
                if add_eos:
                    out.append(apply_eos(ids, self._eos_id(), self.max_length, stats))
                else:
                    out.append(truncate_ids(ids, self.max_length, stats))
        if texts_at:
            if add_eos is False:
                raise ValueError("add_eos=False applies to token-id inputs only; texts always get EOS")
            if self.tokenizer is None:
                raise ValueError("this model directory has no tokenizer.json: pass token-id lists, or "
                                 "tokenizer_path= to from_pretrained")
            encoded = self.tokenizer.encode([inputs[i] for i in texts_at], self.max_length, stats)
            for i, ids in zip(texts_at, encoded):
                out[i] = ids
        return out

    def _eos_id(self) -> int:
        if self.tokenizer is not None:
            return self.tokenizer.eos_token_id
        if self.dims.eos_token_id is not None:
            return self.dims.eos_token_id
        raise ValueError("add_eos=True needs an EOS id: no tokenizer and no eos_token_id in config.json")

    # -- encoding -----------------------------------------------------------------------------

    def forward_packed(self, batch: PackedBatch, pooling: str | None = None, convert_to: str = "numpy",
                       normalize: bool = False, exit_layer: int | None = None):
        """Runs the C core on one packed batch: [B, d] pooled (L2-normalised when asked), or
        [T, d] with pooling='all'; exit_layer=k stops after block k (mambaret.arch.exits)."""
        extra = {"threads": self.threads} if self.device == "cpu" else {}  # the GPU takes no threads
        if exit_layer is not None:
            extra["exit_layer"] = exit_layer
        return self.model.forward(batch.tokens, batch.offsets, pooling=pooling or self.pooling,
                                  max_tokens=self.max_tokens, normalize=normalize, convert_to=convert_to, **extra)

    def encode(self, sentences: str | Sequence[str] | Sequence[Sequence[int]] | Any, prompt_name: str | None = None,
               prompt: str | None = None, batch_size: int = 32, show_progress_bar: bool | None = None,
               output_value: str | None = "sentence_embedding", precision: str = "float32",
               convert_to_numpy: bool = True, convert_to_tensor: bool = False, device: str | None = None,
               normalize_embeddings: bool = False, add_eos: bool | None = None, convert_to: str | None = None,
               truncate_dim: int | None = None, exit_layer: int | None = None):
        """Embeds texts or token-id lists.

        A str gives a (d,) array, a list gives (n, d); an empty list gives (0, d). Inputs are
        batched by token count and returned in input order. output_value="token_embeddings"
        gives one (length, d) array per input instead. convert_to="dlpack" returns the C
        tensor (zero-copy DLPack export); convert_to_tensor=True returns a torch tensor.

        truncate_dim=k keeps the first k dimensions (then L2-normalises when normalisation is
        asked); exit_layer=k takes the state after block k (1-based) through the exit's gain and
        runs no later block. Both default to the encoder's (from_pretrained's) values.
        """
        if output_value not in ("sentence_embedding", "token_embeddings", None):
            raise ValueError(f"output_value must be 'sentence_embedding', 'token_embeddings' or None, got {output_value!r}")
        if precision != "float32":
            raise ValueError(f"precision {precision!r} is not supported; embeddings are float32")
        if device is not None and str(device) != self.device:
            raise ValueError(f"this encoder lives on {self.device!r}; device={device!r} cannot be honoured per call")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if convert_to not in (None, "numpy", "dlpack", "torch"):
            raise ValueError(f"convert_to must be 'numpy', 'dlpack' or 'torch', got {convert_to!r}")
        truncate_dim = check_truncate_dim(self.truncate_dim if truncate_dim is None else truncate_dim,
                                          self.dims.hidden_size)
        exit_layer = check_exit_layer(self.exit_layer if exit_layer is None else exit_layer,
                                      self.dims.num_hidden_layers)
        self._untrained.check(truncate_dim, exit_layer)
        if truncate_dim == self.dims.hidden_size:
            truncate_dim = None  # the full width: nothing to cut
        if hasattr(sentences, "__dlpack__") and not isinstance(sentences, (np.ndarray, str, list, tuple)):
            sentences = _from_dlpack(sentences)  # a torch / CuPy / JAX integer array: one input (1-D) or rows (2-D)
        single = isinstance(sentences, str) or _is_single_id_sequence(sentences)
        inputs = [sentences] if single else _as_input_list(sentences)
        prefix = self._prompt_prefix(prompt_name, prompt)
        if prefix:
            inputs = [prefix + x if isinstance(x, str) else x for x in inputs]

        before = self.truncation.truncated
        ids = self._token_ids(inputs, add_eos=add_eos)
        if self.max_length is not None:
            warn_truncation(self.truncation.truncated - before, len(ids), self.max_length)

        if output_value != "sentence_embedding":
            convert = _converter(convert_to, convert_to_tensor)  # per input, as for pooled embeddings
            tokens = [convert(t) for t in self._encode_tokens(ids, batch_size, show_progress_bar, exit_layer)]
            if output_value is None:
                pooled = self._encode_pooled(ids, batch_size, False, exit_layer=exit_layer, truncate_dim=truncate_dim)
                result = [{"sentence_embedding": convert(p), "token_embeddings": t} for p, t in zip(pooled, tokens)]
                return result[0] if single else result
            return tokens[0] if single else tokens

        if self.device != "cpu" and (convert_to in ("dlpack", "torch") or convert_to_tensor):
            from .cuda_backend import encode_on_device  # results stay in GPU memory

            return encode_on_device(self, ids, batch_size, normalize_embeddings or self.normalize, single,
                                    as_torch=convert_to != "dlpack", exit_layer=exit_layer, truncate_dim=truncate_dim)
        embeddings = self._encode_pooled(ids, batch_size, show_progress_bar, normalize_embeddings or self.normalize,
                                         exit_layer=exit_layer, truncate_dim=truncate_dim)
        if single:
            embeddings = embeddings[0]
        if convert_to == "dlpack":
            return _C_tensor_from(embeddings)
        if convert_to_tensor or convert_to == "torch":
            import torch

            return torch.from_numpy(np.ascontiguousarray(embeddings))
        if not convert_to_numpy:
            return list(embeddings) if not single else embeddings
        return embeddings

    def encode_query(self, sentences, **kwargs):
        """encode() with the "query" prompt when the model defines one."""
        if "prompt_name" not in kwargs and "prompt" not in kwargs and "query" in self.prompts:
            kwargs["prompt_name"] = "query"
        return self.encode(sentences, **kwargs)

    def encode_document(self, sentences, **kwargs):
        """encode() with the "document" (or "passage") prompt when the model defines one."""
        if "prompt_name" not in kwargs and "prompt" not in kwargs:
            for name in ("document", "passage", "corpus"):
                if name in self.prompts:
                    kwargs["prompt_name"] = name
                    break
        return self.encode(sentences, **kwargs)

    def _prompt_prefix(self, prompt_name: str | None, prompt: str | None) -> str:
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError("prompt must be a str")
            return prompt
        name = prompt_name if prompt_name is not None else self.default_prompt_name
        if name is None:
            return ""
        if name not in self.prompts:
            raise ValueError(f"prompt_name {name!r} is not one of this model's prompts {sorted(self.prompts)}")
        return self.prompts[name]

    def _batches(self, ids: list[list[int]], batch_size: int, show_progress_bar: bool | None, what: str):
        """Yields (start, end, PackedBatch) in input order, batched by token budget as the GPU
        path is (tokenization.token_budget_batches), with a progress bar counting inputs."""
        if show_progress_bar is None:
            show_progress_bar = _is_interactive() and len(ids) > 4 * batch_size
        progress = None
        if show_progress_bar:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(ids), desc=what, unit="input")
        try:
            for start, end, batch in token_budget_batches(ids, batch_size, self.max_tokens):
                yield start, end, batch
                if progress is not None:
                    progress.update(end - start)
        finally:
            if progress is not None:
                progress.close()

    def _encode_pooled(self, ids: list[list[int]], batch_size: int, show_progress_bar: bool | None,
                       normalize: bool = False, exit_layer: int | None = None,
                       truncate_dim: int | None = None) -> np.ndarray:
        check_poolable(ids)
        out = np.empty((len(ids), truncate_dim or self.dims.hidden_size), dtype=np.float32)
        for start, end, batch in self._batches(ids, batch_size, show_progress_bar, "Encoding"):
            if truncate_dim is None:  # the core normalises whole rows
                out[start:end] = self.forward_packed(batch, normalize=normalize, exit_layer=exit_layer)
            else:  # truncate first, then normalise what is kept
                out[start:end] = self.forward_packed(batch, exit_layer=exit_layer)[:, :truncate_dim]
                if normalize:
                    l2_normalize_rows(out[start:end])
        return out

    def _encode_tokens(self, ids: list[list[int]], batch_size: int, show_progress_bar: bool | None,
                       exit_layer: int | None = None) -> list[np.ndarray]:
        out: list[np.ndarray] = [None] * len(ids)  # type: ignore[list-item]
        for start, end, batch in self._batches(ids, batch_size, show_progress_bar, "Encoding tokens"):
            states = self.forward_packed(batch, pooling="all", exit_layer=exit_layer)
            for j in range(end - start):
                out[start + j] = states[batch.offsets[j]:batch.offsets[j + 1]]
        return out

    def __call__(self, sentences, **kwargs):
        return self.encode(sentences, **kwargs)


def l2_normalize_rows(rows: np.ndarray) -> None:
    """In place, as the core's L2 normalisation does (float64 sums, norms below 1e-12 held at 1e-12)."""
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    rows *= (1.0 / np.maximum(norms, 1e-12)).astype(np.float32)[:, None]


def _converter(convert_to: str | None, convert_to_tensor: bool):
    """The conversion encode() applies to each result array."""
    if convert_to == "dlpack":
        return _C_tensor_from
    if convert_to == "torch" or convert_to_tensor:
        import torch

        return lambda array: torch.from_numpy(np.ascontiguousarray(array))
    return lambda array: array


def _C_tensor_from(array: np.ndarray):
    """Wraps a result as the core's DLPack tensor (one copy into C-owned memory)."""
    return _C.tensor_from_array(np.ascontiguousarray(array, dtype=np.float32))


def _is_single_id_sequence(x) -> bool:
    if isinstance(x, np.ndarray):
        return x.ndim == 1 and np.issubdtype(x.dtype, np.integer)
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in x)


def _from_dlpack(x) -> np.ndarray:
    """A host copy-free view of a DLPack array; one on a GPU is copied to the host first."""
    try:
        return np.from_dlpack(x)
    except (RuntimeError, BufferError, TypeError) as exc:
        to_host = getattr(x, "cpu", None)  # torch on CUDA: NumPy reads host memory only
        if to_host is None:
            raise TypeError(f"cannot read token ids from a {type(x).__name__} through DLPack: {exc}") from None
        return np.from_dlpack(to_host())


def _as_input_list(x) -> list:
    if isinstance(x, np.ndarray):
        if x.ndim == 2 and np.issubdtype(x.dtype, np.integer):
            return [row for row in x]
        raise TypeError("an array input must be a 1-D or 2-D integer array of token ids")
    if hasattr(x, "__dlpack__") and not isinstance(x, (list, tuple)):
        return _as_input_list(_from_dlpack(x))
    if isinstance(x, Iterable) and not isinstance(x, (bytes, dict)):
        return list(x)
    raise TypeError(f"expected a str, a list of str, or token-id lists; got {type(x).__name__}")


def _as_ids(item, position: int) -> list[int] | np.ndarray:
    """Token ids as given: a list of ints, or an integer array kept as one int32 array (a
    million-token document then costs 4 bytes a token, not a Python int's ~36)."""
    if hasattr(item, "__dlpack__") and not isinstance(item, np.ndarray):
        item = _from_dlpack(item)
    if isinstance(item, np.ndarray):
        if item.ndim != 1 or not np.issubdtype(item.dtype, np.integer):
            raise TypeError(f"input {position}: token ids must be a 1-D integer array, got {item.dtype} {item.shape}")
        if item.dtype != np.int32 and item.size and (item.min() < -2**31 or item.max() >= 2**31):
            raise ValueError(f"input {position} holds a token id outside the int32 range")
        return np.ascontiguousarray(item, dtype=np.int32)
    if isinstance(item, (list, tuple)):
        for v in item:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"input {position}: token ids must be ints, got {type(v).__name__}")
        return [int(v) for v in item]
    raise TypeError(f"input {position}: expected a str or a list of token ids, got {type(item).__name__}")
