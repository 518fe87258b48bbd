"""The ASGI application: routes, the API key, errors and metrics around every endpoint."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import time
from typing import Awaitable, Callable, Optional

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .config import ServeConfig
from .embedding import EmbeddingService
from .errors import ApiError, error_response
from .metrics import Metrics
from .schemas import parse_openai_embeddings, parse_search, parse_tei_embed, read_json_object
from .search import SearchService

log = logging.getLogger("mambaret.serve")
Handler = Callable[[Request], Awaitable[Response]]


class JSONBody(Response):
    """JSON through orjson, which writes NumPy float32 rows directly (shortest float32 repr)."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class ServerState:
    """What the handlers share: settings, the embedding path, the optional index, the counters."""

    def __init__(self, encoder, config: ServeConfig, index=None, bm25=None, fusion: str = "rrf"):
        config.check()
        self.config = config
        self.metrics = Metrics()
        self.embedding = EmbeddingService(encoder, config, self.metrics)
        self.search = SearchService(self.embedding, index, bm25, fusion) if index is not None else None
        self.started = int(time.time())
        self._key = config.api_key.encode("utf-8") if config.api_key else None
        self.accepted = 0  # requests that reached a handler; with answered, the drain report
        self.answered = 0

    def check_key(self, request: Request) -> None:
        if self._key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise ApiError(401, "missing API key: send the header 'Authorization: Bearer YOUR_KEY'",
                           code="missing_api_key")
        # compare_digest takes the same time wherever the first differing byte is
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode("utf-8"), self._key):
            raise ApiError(401, "incorrect API key", code="invalid_api_key")


async def _until_disconnected(request: Request) -> None:
    """Returns when the client goes away (after the body has been read, ASGI's receive then
    waits for the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _unless_disconnected(request: Request, work: Awaitable):
    """work's result, or None when the client disconnected first (the work is then cancelled,
    which frees its place in the batcher's queue)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_until_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return None


def build_app(state: ServerState) -> Starlette:
    config, metrics, embedding = state.config, state.metrics, state.embedding

    def endpoint(name: str, handler: Handler, auth: bool = True) -> Handler:
        async def wrapped(request: Request) -> Response:
            arrived = time.perf_counter()
            state.accepted += 1
            metrics.in_flight += 1
            try:
                if auth:
                    state.check_key(request)
                if metrics.in_flight > config.max_concurrent_requests:
                    raise ApiError(503, f"the server is handling {config.max_concurrent_requests} requests "
                                        f"already; retry shortly", code="server_busy")
                response = await handler(request)
            except ApiError as error:
                response = error.response()
            except Exception:  # logged here; the client gets no trace
                log.exception("unexpected failure in %s", name)
                response = error_response(500, "the server failed to handle this request (see its log)",
                                          code="internal_error")
            finally:
                metrics.in_flight -= 1
                state.answered += 1
            metrics.count_request(name, response.status_code)
            metrics.request_seconds.observe(time.perf_counter() - arrived)
            return response
        return wrapped

    async def openai_embeddings(request: Request) -> Response:
        parsed = parse_openai_embeddings(await read_json_object(request, config), config, embedding.dim)
        if parsed.inputs.texts is not None:
            ids = await embedding.tokenize(parsed.inputs.texts, embedding.prompt_prefix(parsed.prompt_name))
        else:
            ids = embedding.check_token_ids(parsed.inputs.token_ids)
        rows = await _unless_disconnected(request, embedding.embed(ids, normalize=True))
        if rows is None:
            return Response(status_code=499)  # nobody is listening; counted, not sent
        if parsed.encoding_format == "base64":
            data = [{"object": "embedding", "index": i,
                     "embedding": base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")}
                    for i, row in enumerate(rows)]
        else:
            data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)]
        tokens = sum(len(x) for x in ids)
        return JSONBody({"object": "list", "data": data, "model": config.model_id,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def tei_embed(request: Request) -> Response:
        parsed = parse_tei_embed(await read_json_object(request, config), config)
        ids = await embedding.tokenize(parsed.texts, embedding.prompt_prefix(parsed.prompt_name), parsed.truncate)
        rows = await _unless_disconnected(request, embedding.embed(ids, normalize=parsed.normalize))
        if rows is None:
            return Response(status_code=499)
        return JSONBody(rows)

    async def search(request: Request) -> Response:
        if state.search is None:
            raise ApiError(404, "no index is loaded: start the server with --index INDEX_FILE", code="no_index")
        parsed = parse_search(await read_json_object(request, config), config)
        results = await _unless_disconnected(request, state.search.search(parsed.queries, parsed.k, parsed.hybrid))
        if results is None:
            return Response(status_code=499)
        return JSONBody({"model": config.model_id, "results": results[0] if parsed.single else results})

    async def health(request: Request) -> Response:
        return JSONBody({"status": "ok"})

    def model_card() -> dict:
        return {"id": config.model_id, "object": "model", "created": state.started, "owned_by": "mambaret",
                "dimensions": embedding.dim}

    async def models(request: Request) -> Response:
        return JSONBody({"object": "list", "data": [model_card()]})

    async def one_model(request: Request) -> Response:
        if request.path_params["model"] != config.model_id:
            raise ApiError(404, f"the model {request.path_params['model']!r} does not exist here; this server "
                                f"serves {config.model_id!r}", code="model_not_found")
        return JSONBody(model_card())

    async def prometheus(request: Request) -> Response:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def not_found(request: Request, exc: HTTPException) -> Response:
        # unknown paths and methods are answered like the rest: key first, then the OpenAI error body
        try:
            state.check_key(request)
        except ApiError as error:
            response = error.response()
        else:
            if exc.status_code == 405:
                response = error_response(405, f"{request.method} is not allowed on {request.url.path}",
                                          code="method_not_allowed", headers=dict(exc.headers or {}))
            elif exc.status_code == 404:
                response = error_response(404, f"no endpoint {request.url.path}; see /v1/embeddings, /embed, "
                                               f"/search, /v1/models, /health, /metrics", code="not_found")
            else:
                response = error_response(exc.status_code, str(exc.detail))
        metrics.count_request("other", response.status_code)
        return response

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled failure on %s", request.url.path, exc_info=exc)
        return error_response(500, "the server failed to handle this request (see its log)", code="internal_error")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        embedding.batcher.start()
        try:
            yield
        finally:
            await embedding.batcher.stop()

    routes = [
        Route("/v1/embeddings", endpoint("/v1/embeddings", openai_embeddings), methods=["POST"]),
        Route("/embed", endpoint("/embed", tei_embed), methods=["POST"]),
        Route("/search", endpoint("/search", search), methods=["POST"]),
        Route("/health", endpoint("/health", health, auth=False), methods=["GET"]),
        Route("/v1/models", endpoint("/v1/models", models), methods=["GET"]),
        Route("/v1/models/{model:path}", endpoint("/v1/models", one_model), methods=["GET"]),
        Route("/metrics", endpoint("/metrics", prometheus), methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={404: not_found, 405: not_found, Exception: internal_error})


def create_app(encoder, config: Optional[ServeConfig] = None, index=None, bm25=None, fusion: str = "rrf") -> Starlette:
    """The server's ASGI app for an encoder (and optionally an index and a BM25 model), to run
    under any ASGI server; `mambaret serve` runs it under uvicorn."""
    state = ServerState(encoder, config or ServeConfig(), index, bm25, fusion)
    app = build_app(state)
    app.state.mambaret = state
    return app
