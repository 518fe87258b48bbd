"""From a request's inputs to its rows: prompts, tokenization under the server's limits, token-id
checks, and the dynamic batcher in front of the engine."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ...encoding.tokenization import PackedBatch, TruncationStats
from .batcher import DynamicBatcher
from .config import ServeConfig
from .errors import ApiError
from .metrics import Metrics

# Below this many characters a request is tokenized on the event loop: a thread hop would cost
# more than the tokenization itself.
INLINE_TOKENIZE_CHARS = 4096


@dataclass
class _PerInputTruncation(TruncationStats):
    """TruncationStats that also remembers which inputs were cut, in order."""

    cut: list = field(default_factory=list)

    def record(self, kept: int, truncated: bool) -> None:
        super().record(kept, truncated)
        self.cut.append(truncated)


class EmbeddingService:
    """Turns validated inputs into embeddings exactly as MambaEncoder.encode would."""

    def __init__(self, encoder, config: ServeConfig, metrics: Metrics):
        self.encoder = encoder
        self.config = config
        self.metrics = metrics
        self.dim = encoder.embedding_dim
        # a lone request does not wait for company: no other request is in flight to join it
        self.batcher = DynamicBatcher(self._forward, config.max_wait_ms / 1000.0, config.max_batch_tokens, metrics,
                                      company_possible=lambda: metrics.in_flight > self.batcher.queued_requests)

    def _forward(self, ids: Sequence[Sequence[int]], normalize: bool) -> np.ndarray:
        # runs on the engine thread; the C core releases the GIL
        return self.encoder.forward_packed(PackedBatch.from_lists(ids), normalize=normalize)

    # -- prompts ------------------------------------------------------------------------------

    def prompt_prefix(self, prompt_name: Optional[str], role: Optional[str] = None) -> str:
        """The prefix encode(prompt_name=...) would add; with no name, the role's prompt
        ("query" as encode_query, "document" as encode_document) or the model's default prompt."""
        prompts = self.encoder.prompts
        if prompt_name is not None:
            if prompt_name not in prompts:
                known = ", ".join(sorted(prompts)) or "none"
                raise ApiError(422, f"prompt_name {prompt_name!r} is not one of this model's prompts ({known})",
                               code="unknown_prompt", param="prompt_name")
            return prompts[prompt_name]
        if role == "query" and "query" in prompts:
            return prompts["query"]
        if role == "document":
            for name in ("document", "passage", "corpus"):
                if name in prompts:
                    return prompts[name]
        default = self.encoder.default_prompt_name
        return prompts[default] if default is not None else ""

    # -- tokenization -------------------------------------------------------------------------

    async def tokenize(self, texts: list[str], prefix: str, truncate: bool = False) -> list[list[int]]:
        """Token ids with EOS, as encode gives them. An input over max_input_tokens is refused
        (422) unless truncate, which cuts it as max_length does. A model with its own max_length
        cuts its inputs as encode does."""
        tokenizer = self.encoder.tokenizer
        if tokenizer is None:
            raise ApiError(422, "this model has no tokenizer.json, so it cannot take text: send its token ids "
                                "(the server must be started with --accept-token-ids)", code="no_tokenizer")
        if prefix:
            texts = [prefix + t for t in texts]
        limit = self.config.max_input_tokens
        model_cut = self.encoder.max_length
        cut_at = model_cut if model_cut is not None and model_cut <= limit else limit
        stats = _PerInputTruncation()
        if sum(len(t) for t in texts) <= INLINE_TOKENIZE_CHARS:
            ids = tokenizer.encode(texts, cut_at, stats)
        else:
            ids = await asyncio.to_thread(tokenizer.encode, texts, cut_at, stats)
        if cut_at == limit and not truncate and (model_cut is None or model_cut > limit):
            over = [i for i, cut in enumerate(stats.cut) if cut]
            if over:
                raise ApiError(422, f"input {over[0]} is longer than this server's limit of {limit} tokens per "
                                    f"input ({len(over)} of {len(texts)} inputs are); shorten it, or ask for "
                                    f"truncation (TEI's truncate: true)", code="input_too_long", param="input")
        return ids

    def check_token_ids(self, lists: list[list[int]]) -> list[list[int]]:
        """Token-id inputs, used as given (no EOS added, as encode does with id lists)."""
        limit = self.config.max_input_tokens
        for i, ids in enumerate(lists):
            if not ids:
                raise ApiError(422, f"input {i} is an empty token-id list: there is nothing to embed",
                               code="empty_input", param="input")
            if len(ids) > limit:
                raise ApiError(422, f"input {i} has {len(ids)} token ids, over this server's limit of {limit}",
                               code="input_too_long", param="input")
        return lists

    # -- embedding ----------------------------------------------------------------------------

    async def embed(self, ids: list[list[int]], normalize: bool) -> np.ndarray:
        try:
            rows = await self.batcher.embed(ids, normalize)
        except ValueError as error:  # the engine's message for bad input, such as an id outside the vocabulary
            raise ApiError(422, str(error), code="invalid_input", param="input") from None
        self.metrics.inputs += len(ids)
        self.metrics.tokens += sum(len(x) for x in ids)
        return rows
