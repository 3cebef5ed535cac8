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
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Protocol

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


# ---- iteration-level scheduling ----------------------------------------------------------------


class Stepper(Protocol):
    """One served model's running decode (engines/decode.py: DecodeLoop), used from the worker thread."""

    @property
    def rows(self) -> int: ...

    def admit(self, handles: list[RequestHandle]) -> None: ...

    def step(self) -> None: ...

    def fail_all(self, exc: BaseException) -> None: ...


class ContinuousScheduler:
    """Iteration-level scheduling: requests join a model's running decode at its next step.

        scheduler = ContinuousScheduler(executor, max_batch_size=32, max_wait_s=0.01,
                                        waiting_served_ratio=1.2, max_waiting_steps=20)
        scheduler.start({"pruned": DecodeLoop(runner), ...})   # on the event loop
        scheduler.submit(handle)                                # event loop; never blocks
        await scheduler.stop()                                  # refuse new work, finish the accepted

    A drive loop runs in ``executor`` (the engine's one worker thread) while there is work, and
    returns when there is none (so anything else queued on that thread, e.g. loading, runs between
    busy periods). Each turn of the loop: take the queued requests, oldest first, that fit their
    model (at most ``max_batch_size`` rows per model), admit them (encoder batch + prefill batch
    per model), then one decoding step for every model that has rows (round robin across models).
    A finished row leaves at once and its slot is free at the next turn.

    Joining a decoding model: an admission pauses every running row of that model for an encoder
    call and a prefill forward (about as long as two to three steps of the demo model on a CPU), so
    newcomers do not join one by one at every step. They join together (the rule of Hugging Face
    TGI's router, whose ``waiting_served_ratio`` and ``max_waiting_tokens`` these are) once they
    are at least ``waiting_served_ratio`` times as many as the running rows, or once the oldest has
    waited ``max_waiting_steps`` of the model's steps, or when they fill its free rows. A model
    with no rows admits at once.

    Waiting on an idle device: none when requests come apart. Only when the device is idle and
    requests have been arriving close together (the moving average of the gaps between arrivals is
    under half of ``max_wait_s``) does the loop wait for more to fill the batch: until the model's
    rows are full, the oldest has waited ``max_wait_s``, or no request has come for three average
    gaps (the burst is over). A lone request on an idle server starts at once.
    """

    #: weight of the newest gap in the moving average of gaps between arrivals
    GAP_WEIGHT = 0.2

    def __init__(self, executor: Executor, *, max_batch_size: int, max_wait_s: float,
                 waiting_served_ratio: float = 1.2, max_waiting_steps: int = 20):
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.waiting_served_ratio = waiting_served_ratio
        self.max_waiting_steps = max_waiting_steps
        self._steppers: dict[str, Stepper] = {}
        self._cond = threading.Condition()
        self._pending: deque[RequestHandle] = deque()
        self._admitting = 0
        self._driving = False
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drained: asyncio.Event | None = None
        self._last_arrival: float | None = None
        self._gap = float("inf")  # moving average of the gaps between arrivals (s)
        self._steps: dict[str, int] = {}  # per model: decoding steps run so far
        self._queued_at: dict[int, int] = {}  # id(handle) -> its model's step count when it was queued

    # ---- public (event loop) --------------------------------------------------------------
    def start(self, steppers: dict[str, Stepper]) -> None:
        self._steppers = dict(steppers)
        self._loop = asyncio.get_running_loop()
        self._drained = asyncio.Event()
        self._drained.set()

    def submit(self, handle: RequestHandle) -> None:
        if self._stopping:
            raise shutting_down()
        handle.on_cancel(self._discard)
        with self._cond:
            now = handle.submitted_at
            if self._last_arrival is not None:
                gap = min(now - self._last_arrival, 1.0)  # one long pause must not hide a new burst for long
                self._gap = gap if self._gap == float("inf") else \
                    (1 - self.GAP_WEIGHT) * self._gap + self.GAP_WEIGHT * gap
            self._last_arrival = now
            self._queued_at[id(handle)] = self._steps.get(handle.request.model, 0)
            self._pending.append(handle)
            self._cond.notify()
            if not self._driving:
                self._driving = True
                self._drained.clear()
                self.executor.submit(self._drive)

    def depth(self) -> int:
        return len(self._pending)

    def in_flight(self) -> int:
        return len(self._pending) + self._admitting + sum(s.rows for s in self._steppers.values())

    async def stop(self) -> None:
        """Stop accepting; every accepted request still runs; returns once all have finished."""
        self._stopping = True
        with self._cond:
            self._cond.notify()
        if self._drained is not None:
            await self._drained.wait()

    # ---- internals (worker thread, except _discard) ------------------------------------------
    def _discard(self, handle: RequestHandle) -> None:
        with self._cond:
            try:
                self._pending.remove(handle)
            except ValueError:
                pass  # admitted: its row sees handle.cancelled and leaves at the next step

    def _mark_drained(self) -> None:
        # on the event loop: a submit may have started a new drive since this one returned
        with self._cond:
            if not self._driving:
                self._drained.set()

    def _busy(self) -> bool:
        return any(s.rows for s in self._steppers.values())

    def _linger(self) -> None:
        """Idle device, requests queued: wait for more while they arrive close together (holds the lock)."""
        if self._stopping or not self._gap < self.max_wait_s / 2:
            return
        head = self._pending[0]
        deadline = head.submitted_at + self.max_wait_s
        while not self._stopping:
            now = time.perf_counter()
            quiet_until = (self._last_arrival or now) + 3 * self._gap
            same = sum(1 for h in self._pending if h.request.model == head.request.model)
            if same >= self.max_batch_size or now >= deadline or now >= quiet_until:
                return
            self._cond.wait(min(deadline, quiet_until) - now)

    def _take(self) -> dict[str, list[RequestHandle]]:
        """Queued requests to admit now, per model, oldest first, as many as its rows have room for
        (holds the lock): all of them for a model with no rows; for a decoding model, only once they
        fill its free rows, are ``waiting_served_ratio`` times its rows, or the oldest has waited
        ``max_waiting_steps`` of its steps (the class doc says why)."""
        queued: dict[str, list[RequestHandle]] = {}
        for h in self._pending:
            if not h.done:  # not cancelled while queued
                queued.setdefault(h.request.model, []).append(h)
        taken: dict[str, list[RequestHandle]] = {}
        for m, handles in queued.items():
            stepper = self._steppers[m]
            room = self.max_batch_size - stepper.rows
            group = handles[:room]
            if not group:
                continue
            waited = self._steps.get(m, 0) - self._queued_at.get(id(group[0]), 0)
            if stepper.rows and len(group) < room and not self._stopping \
                    and len(group) < self.waiting_served_ratio * stepper.rows and waited < self.max_waiting_steps:
                continue  # its rows keep decoding; the newcomers join together later
            taken[m] = group
        chosen = {id(h) for group in taken.values() for h in group}
        self._pending = deque(h for h in self._pending if not h.done and id(h) not in chosen)
        self._queued_at = {id(h): self._queued_at.get(id(h), 0) for h in self._pending}
        return taken

    def _drive(self) -> None:
        try:
            while True:
                with self._cond:
                    while self._pending and self._pending[0].done:
                        self._pending.popleft()
                    if not self._busy():
                        if not self._pending:
                            self._driving = False
                            self._loop.call_soon_threadsafe(self._mark_drained)
                            return
                        self._linger()
                    taken = self._take()
                    self._admitting = sum(map(len, taken.values()))
                for model, handles in taken.items():
                    t = time.perf_counter()
                    for h in handles:
                        h.dispatched_at = t
                    self._run(model, self._steppers[model].admit, handles)
                self._admitting = 0
                for model, stepper in self._steppers.items():
                    if stepper.rows:
                        self._run(model, stepper.step)
                        self._steps[model] = self._steps.get(model, 0) + 1
        except BaseException as exc:  # a bug in this loop: fail what is queued, let the next submit restart it
            log.exception("continuous scheduler failed")
            err = as_api_error(exc)
            with self._cond:
                failed, self._pending = list(self._pending), deque()
                self._driving = False
            for h in failed:
                h.loop.call_soon_threadsafe(h.fail, err)
            for stepper in self._steppers.values():
                stepper.fail_all(exc)
            self._loop.call_soon_threadsafe(self._mark_drained)

    def _run(self, model: str, fn, *args) -> None:
        """A stepper call; one that raises fails that model's rows (and the handles it was given), not the loop."""
        try:
            fn(*args)
        except Exception as exc:
            log.exception("model %r: %s failed", model, getattr(fn, "__name__", "step"))
            err = as_api_error(exc)
            for h in args[0] if args else []:
                h.loop.call_soon_threadsafe(h.fail, err)
            self._steppers[model].fail_all(exc)
