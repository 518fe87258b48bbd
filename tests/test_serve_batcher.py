"""The server's dynamic batcher and prompt choice, without HTTP: requests merged into one forward
up to the token budget, rows handed back in order, a cancelled request dropped, a failing input
isolated from its neighbours, and prompts chosen as encode_query / encode_document choose them."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("orjson")

import mambaret as mr  # noqa: E402
from mambaret.app.serve.batcher import DynamicBatcher  # noqa: E402
from mambaret.app.serve.config import ServeConfig  # noqa: E402
from mambaret.app.serve.embedding import EmbeddingService  # noqa: E402
from mambaret.app.serve.errors import ApiError  # noqa: E402
from mambaret.app.serve.metrics import Metrics  # noqa: E402


class RecordingForward:
    """Row i of a forward is [first token of input i, its length, normalize]; id 13 is refused."""

    def __init__(self):
        self.calls: list[list[list[int]]] = []

    def __call__(self, ids, normalize):
        self.calls.append([list(x) for x in ids])
        if any(13 in x for x in ids):
            raise ValueError("token id 13 is outside the vocabulary")
        return np.array([[x[0], len(x), float(normalize)] for x in ids], dtype=np.float32)


def run_with_batcher(forward, body, max_wait_s=0.05, max_batch_tokens=100):
    async def main():
        batcher = DynamicBatcher(forward, max_wait_s, max_batch_tokens, Metrics())
        batcher.start()
        try:
            return await body(batcher)
        finally:
            await batcher.stop()
    return asyncio.run(main())


def test_concurrent_requests_share_one_forward_and_get_their_rows_in_order():
    forward = RecordingForward()
    requests = [[[i * 10 + j] * (j + 1) for j in range(i % 3 + 1)] for i in range(6)]

    async def body(batcher):
        return await asyncio.gather(*(batcher.embed(r, True) for r in requests))

    results = run_with_batcher(forward, body)
    assert len(forward.calls) == 1 and len(forward.calls[0]) == sum(len(r) for r in requests)
    for request, rows in zip(requests, results):
        assert rows[:, 0].tolist() == [x[0] for x in request] and rows[:, 1].tolist() == [len(x) for x in request]


def test_the_token_budget_splits_forwards_and_a_larger_request_runs_alone():
    forward = RecordingForward()

    async def body(batcher):
        return await asyncio.gather(batcher.embed([[1] * 60], True), batcher.embed([[2] * 60], True),
                                    batcher.embed([[3] * 500], True))

    results = run_with_batcher(forward, body)
    assert [len(c) for c in forward.calls] == [1, 1, 1]
    assert [r[0, 0] for r in results] == [1, 2, 3]


def test_normalized_and_raw_requests_never_share_a_forward():
    forward = RecordingForward()

    async def body(batcher):
        return await asyncio.gather(batcher.embed([[1]], True), batcher.embed([[2]], False), batcher.embed([[3]], True))

    results = run_with_batcher(forward, body)
    assert sorted(len(c) for c in forward.calls) == [1, 2]
    assert [r[0, 2] for r in results] == [1.0, 0.0, 1.0]


def test_a_cancelled_request_is_dropped_before_its_forward():
    forward = RecordingForward()

    async def body(batcher):
        gone = asyncio.ensure_future(batcher.embed([[7, 7]], True))
        kept = asyncio.ensure_future(batcher.embed([[8]], True))
        await asyncio.sleep(0)  # both queued
        gone.cancel()
        return await kept

    rows = run_with_batcher(forward, body)
    assert forward.calls == [[[8]]] and rows[0, 0] == 8


def test_a_failing_input_fails_only_its_request():
    forward = RecordingForward()

    async def body(batcher):
        return await asyncio.gather(batcher.embed([[1]], True), batcher.embed([[13]], True),
                                    batcher.embed([[2, 2]], True), return_exceptions=True)

    first, bad, third = run_with_batcher(forward, body)
    assert isinstance(bad, ValueError) and "outside the vocabulary" in str(bad)
    assert first[0, 0] == 1 and third[0, 0] == 2


def test_prompts_follow_encode_query_and_encode_document():
    encoder = mr.MambaEncoder.from_pretrained(mr.DEFAULT_MODEL, threads=1,
                                              prompts={"query": "query: ", "passage": "passage: "})
    service = EmbeddingService(encoder, ServeConfig(), Metrics())
    assert service.prompt_prefix(None) == ""
    assert service.prompt_prefix(None, role="query") == "query: "
    assert service.prompt_prefix(None, role="document") == "passage: "
    assert service.prompt_prefix("query", role="document") == "query: "
    with pytest.raises(ApiError, match="not one of this model's prompts"):
        service.prompt_prefix("title")

    async def embed(texts, prefix):
        service.batcher.start()
        try:
            return await service.embed(await service.tokenize(texts, prefix), normalize=True)
        finally:
            await service.batcher.stop()

    texts = ["what is a state space model?", "pasta"]
    rows = asyncio.run(embed(texts, service.prompt_prefix(None, role="query")))
    np.testing.assert_allclose(rows, encoder.encode_query(texts, normalize_embeddings=True), atol=1e-6, rtol=0)


def test_a_lone_request_does_not_wait_for_company():
    forward = RecordingForward()

    async def body(batcher):
        # max_wait is 60 s: a request that waited for company would run into the timeout
        first = await asyncio.wait_for(batcher.embed([[1]], True), 10)
        second = await asyncio.wait_for(batcher.embed([[2]], True), 10)
        return first, second

    async def main():
        batcher = DynamicBatcher(forward, 60.0, 100, Metrics(), company_possible=lambda: False)
        batcher.start()
        try:
            return await body(batcher)
        finally:
            await batcher.stop()

    first, second = asyncio.run(main())
    assert forward.calls == [[[1]], [[2]]] and first[0, 0] == 1 and second[0, 0] == 2
