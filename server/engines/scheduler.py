"""Dynamic batching: which queued requests run together, and when (asyncio, no torch).

    scheduler = BatchScheduler(execute, max_batch_size=8, max_wait_s=0.01)
    scheduler.start()
    scheduler.submit(handle)          # queued (admission bounded the load before the upload was read)
    await scheduler.stop()            # refuse new work, run everything queued, then return

Policy: requests of all models wait in one FIFO queue. The oldest request picks the model of
the next batch; that batch takes the queue's requests of the same model, oldest first, up to
``max_batch_size`` (tasks may differ: prompts are per sample). It leaves as soon as it is full,
or when its oldest request has waited ``max_wait_s``; while a batch runs, new requests queue,
so under load batches leave full without waiting. ``execute(model, batch)`` runs one batch
and resolves its handles (engines fail a single item alone: see runner.encode_prompts); a batch
that raises is failed as a whole. Batches run one at a time (one device).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Awaitable, Callable

from ..admission import shutting_down
from ..errors import as_api_error
from .base import RequestHandle

log = logging.getLogger(__name__)

Execute = Callable[[str, list[RequestHandle]], Awaitable[None]]


class BatchScheduler:
    def __init__(self, execute: Execute, *, max_batch_size: int, max_wait_s: float):
        self._execute = execute
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
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
            raise shutting_down()
        handle.on_cancel(self._discard)
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
                    h.fail(err)
            finally:
                self._running = []
