"""Dynamic batching: concurrent requests merged into one engine forward at a time.

Requests queue their token-id lists; one worker takes the oldest request, waits up to max_wait
(from that request's arrival) for company while the merged batch holds fewer than
max_batch_tokens tokens and another request could still join (company_possible), runs one forward on the engine thread (the C core releases the GIL, so
the event loop keeps serving), and hands each request its own rows, in order. An embedding does
not depend on which other inputs share its forward, so merging changes no result.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from .metrics import Metrics

log = logging.getLogger("mambaret.serve")

Forward = Callable[[Sequence[Sequence[int]], bool], np.ndarray]


@dataclass
class _Job:
    ids: Sequence[Sequence[int]]
    normalize: bool
    tokens: int
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Merges concurrent embed() calls into forwards of at most max_batch_tokens tokens (a single
    larger request runs alone). forward(ids, normalize) -> float32 [len(ids), d]."""

    def __init__(self, forward: Forward, max_wait_s: float, max_batch_tokens: int, metrics: Metrics,
                 company_possible: Callable[[], bool] = lambda: True):
        self._forward = forward
        self._company_possible = company_possible
        self._max_wait_s = max_wait_s
        self._max_batch_tokens = max_batch_tokens
        self._metrics = metrics
        self._queue: deque[_Job] = deque()
        self._queued_tokens = 0
        self._arrival = asyncio.Event()
        # one thread: one forward at a time per model, as the engine's workspace wants
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mambaret-engine")
        self._worker: Optional[asyncio.Task] = None

    @property
    def queued_requests(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="mambaret-batcher")

    async def stop(self) -> None:
        """Stops after the forward in progress; jobs still queued are failed (the server drains its
        requests before it stops the batcher, so none should be left)."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._engine.shutdown(wait=True)

    async def embed(self, ids: Sequence[Sequence[int]], normalize: bool) -> np.ndarray:
        """The rows of ids, in order. Cancelling the caller drops the job if it has not started."""
        if not ids:
            raise ValueError("nothing to embed")
        job = _Job(ids, normalize, sum(len(x) for x in ids), asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._queued_tokens += job.tokens
        self._metrics.queued_inputs += len(ids)
        self._arrival.set()
        return await job.future

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._arrival.clear()
                await self._arrival.wait()
            await self._wait_for_company()
            jobs = self._take_batch()
            if jobs:
                await self._run_batch(jobs)

    async def _wait_for_company(self) -> None:
        deadline = self._queue[0].arrived + self._max_wait_s
        while self._queued_tokens < self._max_batch_tokens and self._company_possible():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take_batch(self) -> list[_Job]:
        """The oldest job and the queued jobs with its normalize flag, up to the token budget;
        jobs whose caller went away are dropped."""
        jobs: list[_Job] = []
        tokens = 0
        kept: deque[_Job] = deque()
        while self._queue:
            job = self._queue.popleft()
            if job.future.done():  # cancelled: the client disconnected
                self._dequeued(job)
                continue
            fits = not jobs or (job.normalize == jobs[0].normalize and tokens + job.tokens <= self._max_batch_tokens)
            if fits:
                self._dequeued(job)
                jobs.append(job)
                tokens += job.tokens
            else:
                kept.append(job)
                if tokens >= self._max_batch_tokens:
                    break
        kept.extend(self._queue)
        self._queue = kept
        return jobs

    def _dequeued(self, job: _Job) -> None:
        self._queued_tokens -= job.tokens
        self._metrics.queued_inputs -= len(job.ids)

    async def _run_batch(self, jobs: list[_Job]) -> None:
        merged = [x for job in jobs for x in job.ids]
        started = time.perf_counter()
        for job in jobs:
            self._metrics.queue_seconds.observe(started - job.arrived)
        loop = asyncio.get_running_loop()
        try:
            rows = await loop.run_in_executor(self._engine, self._forward, merged, jobs[0].normalize)
        except Exception as error:
            if len(jobs) == 1:
                _fail(jobs[0], error)
                return
            # one bad input must not fail its neighbours: run each request alone
            for job in jobs:
                try:
                    own = await loop.run_in_executor(self._engine, self._forward, job.ids, job.normalize)
                except Exception as own_error:
                    _fail(job, own_error)
                else:
                    _resolve(job, own)
            return
        finally:
            self._metrics.compute_seconds.observe(time.perf_counter() - started)
        self._metrics.batch_rows.observe(len(merged))
        self._metrics.batch_tokens.observe(sum(job.tokens for job in jobs))
        start = 0
        for job in jobs:
            _resolve(job, rows[start:start + len(job.ids)])
            start += len(job.ids)


def _resolve(job: _Job, rows: np.ndarray) -> None:
    if not job.future.done():
        job.future.set_result(rows)


def _fail(job: _Job, error: BaseException) -> None:
    log.warning("an engine forward failed: %s", error)
    if not job.future.done():
        job.future.set_exception(error)
