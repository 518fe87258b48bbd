"""Reading and checking request bodies: the body under its size and time limits, JSON, and each
endpoint's fields. Every problem is an ApiError whose message names the field."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Optional, Union

import orjson

from .config import ServeConfig
from .errors import ApiError

TOKEN_IDS_REFUSED = (
    "input holds token ids: OpenAI's clients send tiktoken ids by default, which are not this model's "
    "vocabulary. Send the texts as strings (with LangChain's OpenAIEmbeddings pass "
    "check_embedding_ctx_length=False), or start the server with --accept-token-ids to send this model's "
    "own token ids")


async def read_json_object(request, config: ServeConfig) -> dict:
    """The body as a JSON object: 413 over max_body_bytes, 408 when it takes longer than
    body_timeout_s to arrive, 400 when it is not JSON, 422 when it is not an object."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_size = int(declared)
        except ValueError:
            raise ApiError(400, f"Content-Length {declared!r} is not a number") from None
        if declared_size > config.max_body_bytes:
            raise ApiError(413, f"the request body is {declared_size} bytes, over this server's limit of "
                                f"{config.max_body_bytes} bytes", code="body_too_large")

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_body_bytes:
                raise ApiError(413, f"the request body is over this server's limit of {config.max_body_bytes} "
                                    f"bytes", code="body_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        body = await asyncio.wait_for(read(), config.body_timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {config.body_timeout_s:g} s",
                       code="body_timeout") from None
    if not body.strip():
        raise ApiError(400, "the request body is empty: send a JSON object", code="empty_body")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, f"the request body is not valid JSON: {error}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(422, f"the request body must be a JSON object, got a JSON {_json_type(data)}",
                       code="invalid_body")
    return data


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_str(data: dict, name: str) -> Optional[str]:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(422, f"{name} must be a string, got a JSON {_json_type(value)}", param=name)
    return value


def _optional_bool(data: dict, name: str, default: bool) -> bool:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(422, f"{name} must be true or false, got a JSON {_json_type(value)}", param=name)
    return value


@dataclass
class Inputs:
    """A request's inputs: texts, or token-id lists (never both)."""

    texts: Optional[list[str]] = None
    token_ids: Optional[list[list[int]]] = None

    def __len__(self) -> int:
        return len(self.texts if self.texts is not None else self.token_ids)


def parse_inputs(value: Any, name: str, config: ServeConfig, allow_token_ids: bool) -> Inputs:
    """A string, a list of strings, or (OpenAI) a list of ints / a list of lists of ints."""
    if value is None:
        raise ApiError(422, f"{name} is required: a string or a list of strings", code="missing_input", param=name)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ApiError(422, f"{name} must be a string or a list of strings, got a JSON {_json_type(value)}",
                       param=name)
    if not value:
        raise ApiError(422, f"{name} is an empty list: send at least one text", code="empty_input", param=name)
    if len(value) > config.max_inputs:
        raise ApiError(413, f"{name} holds {len(value)} items, over this server's limit of {config.max_inputs} "
                            f"per request", code="too_many_inputs", param=name)
    if all(isinstance(v, str) for v in value):
        for i, text in enumerate(value):
            if not text:
                raise ApiError(422, f"{name}[{i}] is an empty string: there is nothing to embed",
                               code="empty_input", param=name)
        return Inputs(texts=value)
    token_ids = _token_id_lists(value) if allow_token_ids else None
    if token_ids is None:
        bad = next(i for i, v in enumerate(value) if not isinstance(v, str))
        raise ApiError(422, f"{name}[{bad}] must be a string, got a JSON {_json_type(value[bad])}", param=name)
    if not config.accept_token_ids:
        raise ApiError(422, TOKEN_IDS_REFUSED, code="token_ids_not_accepted", param=name)
    return Inputs(token_ids=token_ids)


def _token_id_lists(value: list) -> Optional[list[list[int]]]:
    """[1, 2, 3] -> [[1, 2, 3]]; [[1, 2], [3]] -> itself; anything else None."""
    if all(_is_int(v) for v in value):
        return [value]
    if all(isinstance(v, list) and all(_is_int(t) for t in v) for v in value):
        return value
    return None


@dataclass
class OpenAIEmbeddingRequest:
    inputs: Inputs
    encoding_format: str
    prompt_name: Optional[str]


def parse_openai_embeddings(data: dict, config: ServeConfig, dim: int) -> OpenAIEmbeddingRequest:
    model = data.get("model")
    if model is not None:
        if not isinstance(model, str):
            raise ApiError(422, f"model must be a string, got a JSON {_json_type(model)}", param="model")
        if model != config.model_id:
            raise ApiError(404, f"the model {model!r} does not exist here; this server serves {config.model_id!r}",
                           code="model_not_found", param="model")
    encoding_format = data.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    if encoding_format not in ("float", "base64"):
        raise ApiError(422, f"encoding_format must be 'float' or 'base64', got {encoding_format!r}",
                       param="encoding_format")
    dimensions = data.get("dimensions")
    if dimensions is not None:
        if not _is_int(dimensions) or dimensions <= 0:
            raise ApiError(422, f"dimensions must be a positive integer, got {dimensions!r}", param="dimensions")
        if dimensions != dim:
            raise ApiError(422, f"this model's embeddings cannot be shortened (it was not trained for truncated "
                                f"embeddings): dimensions must be {dim} or left out", code="dimensions_not_supported",
                           param="dimensions")
    _optional_str(data, "user")
    inputs = parse_inputs(data.get("input"), "input", config, allow_token_ids=True)
    return OpenAIEmbeddingRequest(inputs, encoding_format, _optional_str(data, "prompt_name"))


@dataclass
class TeiEmbedRequest:
    texts: list[str]
    normalize: bool
    truncate: bool
    prompt_name: Optional[str]


def parse_tei_embed(data: dict, config: ServeConfig) -> TeiEmbedRequest:
    inputs = parse_inputs(data.get("inputs"), "inputs", config, allow_token_ids=False)
    direction = data.get("truncation_direction", "Right")
    if direction not in ("Right", "right", None):
        raise ApiError(422, f"truncation_direction must be 'Right' (the end of a text is cut), got {direction!r}",
                       param="truncation_direction")
    return TeiEmbedRequest(inputs.texts, _optional_bool(data, "normalize", True), _optional_bool(data, "truncate", False),
                           _optional_str(data, "prompt_name"))


@dataclass
class SearchRequest:
    queries: list[str]
    k: int
    hybrid: Optional[bool]
    single: bool


def parse_search(data: dict, config: ServeConfig) -> SearchRequest:
    raw: Union[str, list, None] = data.get("queries", data.get("query"))
    inputs = parse_inputs(raw, "queries", config, allow_token_ids=False)
    k = data.get("k", 10)
    if not _is_int(k) or not 1 <= k <= config.search_max_k:
        raise ApiError(422, f"k must be an integer from 1 to {config.search_max_k}, got {k!r}", param="k")
    hybrid = data.get("hybrid")
    if hybrid is not None and not isinstance(hybrid, bool):
        raise ApiError(422, f"hybrid must be true or false, got a JSON {_json_type(hybrid)}", param="hybrid")
    return SearchRequest(inputs.texts, k, hybrid, isinstance(raw, str))
