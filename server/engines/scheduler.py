"""Dynamic batching: which queued requests run together, and when (asyncio, no torch).

    scheduler = BatchScheduler(execute, max_batch_size=8, max_wait_s=0.01, max_queue=256)
    scheduler.start()
    scheduler.submit(handle)          # ApiError 429 when max_queue requests already wait
    await scheduler.stop()            # refuse new work, run everything queued, then return

Policy: requests of all models wait in one FIFO queue. The oldest request picks the model of
the next batch; that batch takes the queue's requests of the same model, oldest first, up to
``max_batch_size`` (tasks may differ: prompts are per sample). It leaves as soon as it is full,
or when its oldest request has waited ``max_wait_s``; while a batch runs, new requests queue,
so under load batches leave full without waiting. ``execute(model, batch)`` runs one batch
and resolves its handles; batches run one at a time (one device).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Awaitable, Callable

from ..errors import ApiError, as_api_error
from ..settings import Settings
from .base import Engine, EngineRequest, ModelInfo, RequestHandle

log = logging.getLogger(__name__)

Execute = Callable[[str, list[RequestHandle]], Awaitable[None]]


class BatchScheduler:
    def __init__(self, execute: Execute, *, max_batch_size: int, max_wait_s: float, max_queue: int,
                 overloaded: Callable[[], ApiError] | None = None):
        self._execute = execute
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._overloaded = overloaded or (lambda: ApiError(429, "the server queue is full: retry later",
                                                           code="queue_full", headers={"Retry-After": "1"}))
        self._pending: deque[RequestHandle] = deque()
        self._running: list[RequestHandle] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    # ---- public -------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="slimspeech-scheduler")

    def submit(self, handle: RequestHandle) -> None:
        if self._stopping:
            raise ApiError(503, "the server is shutting down: retry on another replica", code="shutting_down")
        if len(self._pending) >= self.max_queue:
            raise self._overloaded()
        handle._on_cancel = self._discard
        self._pending.append(handle)
        self._wakeup.set()

    def depth(self) -> int:
        return len(self._pending)

    def in_flight(self) -> int:
        return len(self._pending) + len(self._running)

    async def stop(self) -> None:
        """Stop accepting; every queued request still runs; returns once all have finished."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    # ---- internals ----------------------------------------------------------------------
    def _discard(self, handle: RequestHandle) -> None:
        try:
            self._pending.remove(handle)
        except ValueError:
            pass  # already running: the runner sees handle.cancelled and stops decoding it
        self._wakeup.set()

    async def _wait(self, timeout: float | None) -> None:
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except TimeoutError:
            pass

    def _take(self) -> tuple[str, list[RequestHandle]] | None:
        """The next batch if it should leave now, else None."""
        head = self._pending[0]
        model = head.request.model
        same = [h for h in self._pending if h.request.model == model][: self.max_batch_size]
        waited = time.perf_counter() - head.submitted_at
        if len(same) < self.max_batch_size and waited < self.max_wait_s and not self._stopping:
            return None
        taken = set(map(id, same))
        self._pending = deque(h for h in self._pending if id(h) not in taken)
        return model, same

    async def _loop(self) -> None:
        while True:
            while self._pending and self._pending[0].done:  # cancelled while queued
                self._pending.popleft()
            if not self._pending:
                if self._stopping:
                    return
                await self._wait(None)
                continue
            picked = self._take()
            if picked is None:
                head = self._pending[0]
                await self._wait(max(0.0, head.submitted_at + self.max_wait_s - time.perf_counter()))
                continue
            model, batch = picked
            now = time.perf_counter()
            for h in batch:
                h.dispatched_at = now
            self._running = batch
            try:
                await self._execute(model, batch)
            except Exception as exc:  # a bug or a device error: fail this batch, keep serving
                err = as_api_error(exc)
                for h in batch:
                    h._fail(err)
            finally:
                self._running = []


class BatchedEngine(Engine):
    """What the torch and vllm engines share: requests queue in a BatchScheduler whose batches run
    ``execute(model, batch)``, model work runs in one worker thread, and ``self._runners`` holds one
    loaded runner (with ``.info`` and ``.memory_stats()``) per served model once it is ready."""

    def __init__(self, settings: Settings, model_dirs: dict[str, Path], execute: Execute, thread_name: str):
        self.settings = settings
        self.model_dirs = dict(model_dirs)
        self._runners: dict = {}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=thread_name)
        self._scheduler = BatchScheduler(execute, max_batch_size=settings.max_batch_size,
                                         max_wait_s=settings.max_wait_ms / 1000.0, max_queue=settings.max_queue,
                                         overloaded=self.overloaded)
        self._ready = False
        self._stopping = False

    @property
    def ready(self) -> bool:
        return self._ready

    def models(self) -> dict[str, ModelInfo]:
        return {name: r.info for name, r in self._runners.items()}

    def submit(self, request: EngineRequest) -> RequestHandle:
        if self._stopping:
            raise ApiError(503, "the server is shutting down: retry on another replica", code="shutting_down")
        if not self._ready:
            raise ApiError(503, "models are still loading: retry when /ready answers 200", code="not_ready")
        if request.model not in self._runners:
            raise ApiError(404, f"model {request.model!r} is not served here", param="model", code="model_not_found")
        if self.queue_depth() >= self.settings.max_queue:
            raise self.overloaded()
        handle = RequestHandle(request)
        self._scheduler.submit(handle)
        return handle

    def queue_depth(self) -> int:
        return self._scheduler.depth()

    def memory_stats(self) -> dict[str, float]:
        stats: dict[str, float] = {}
        for runner in self._runners.values():  # one process-wide CUDA allocator: the max, not the sum
            for key, value in runner.memory_stats().items():
                stats[key] = max(stats.get(key, 0.0), value)
        return stats
