"""Admission: whether the server takes a request now, decided once, before its body is read.

    admission = Admission(max_requests=256, max_audio_seconds=1800, state=lambda: engine_state)
    ticket = admission.enter()            # ApiError 503 (loading, load failed, stopping) or 429 (full)
    admission.reserve_audio(ticket, 612.0)  # before decoding: ApiError 429 when too much audio is in flight
    admission.leave(ticket)               # when the answer has been sent (streams: when they end)

Every audio request holds one slot from before its upload is read until its answer is sent,
however many chunks its audio is split into: ``max_requests`` (``--max-queue``) bounds the
requests in the server, uploading, decoding, queued or running. A request that finds every slot
taken is answered 429 at once, before its body is read, so a storm of uploads costs neither
memory nor decoding. The decoded audio of admitted requests is bounded too: before decoding, a
request reserves its duration (known from the file's header) within ``max_audio_seconds`` of
audio in flight (16 kHz float32: 64 KB per second), else 429; alone it always fits, because the
settings require that budget to be at least the longest accepted audio.

``Retry-After`` comes from the measured drain rate: the seconds until one slot frees at the
rate requests have recently finished (1 s before anything has finished).

The readiness checks live here too, one message each: the HTTP layer, /ready and /v1/models
ask ``admission.check()``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .errors import ApiError

#: how many recent finishes the drain rate is measured over
_RATE_WINDOW = 32


@dataclass
class EngineState:
    """What admission needs to know of the engine (plain data, read at each check)."""

    ready: bool
    stopping: bool
    load_error: str | None = None


def load_failed(message: str) -> ApiError:
    return ApiError(503, f"model loading failed: {message} (see the server log; fix the model dir and restart)",
                    code="model_load_failed")


def not_ready() -> ApiError:
    return ApiError(503, "models are still loading: retry when /ready answers 200", code="not_ready",
                    headers={"Retry-After": "1"})


def shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down: retry on another replica", code="shutting_down")


@dataclass
class Ticket:
    """One admitted request's hold on a slot and on its share of the audio budget."""

    audio_seconds: float = 0.0
    left: bool = False


class Admission:
    def __init__(self, max_requests: int, max_audio_seconds: float, state: Callable[[], EngineState],
                 clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.max_requests = max_requests
        self.max_audio_seconds = max_audio_seconds
        self._state = state
        self.requests = 0
        self.audio_seconds = 0.0
        self._finished: deque[float] = deque(maxlen=_RATE_WINDOW)

    # ---- checks -------------------------------------------------------------------------
    def check(self) -> None:
        """Raise the 503 that says why nothing can be served now; return when the engine serves."""
        state = self._state()
        if state.load_error:
            raise load_failed(state.load_error)
        if state.stopping:
            raise shutting_down()
        if not state.ready:
            raise not_ready()

    def retry_after(self) -> int:
        """Seconds until one slot frees at the recently measured finishing rate (at least 1)."""
        if len(self._finished) < 2:
            return 1
        span = self._finished[-1] - self._finished[0]
        rate = (len(self._finished) - 1) / span if span > 0 else float("inf")
        return max(1, min(60, math.ceil(1.0 / rate))) if rate > 0 else 60

    def _full(self, what: str) -> ApiError:
        wait = self.retry_after()
        return ApiError(429, f"the server is full ({what}): retry after {wait} s", code="queue_full",
                        headers={"Retry-After": str(wait)})

    # ---- slots --------------------------------------------------------------------------
    def enter(self) -> Ticket:
        self.check()
        if self.requests >= self.max_requests:
            raise self._full(f"{self.requests} requests in progress, --max-queue {self.max_requests}")
        self.requests += 1
        return Ticket()

    def reserve_audio(self, ticket: Ticket, seconds: float) -> None:
        """Hold ``seconds`` of decoded audio for the ticket's request, or raise 429 when it does not fit now."""
        if ticket.audio_seconds or seconds <= 0:
            return
        if self.audio_seconds + seconds > self.max_audio_seconds and self.audio_seconds > 0:
            raise self._full(f"{self.audio_seconds:.0f} s of audio in progress, "
                             f"--max-audio-in-flight-seconds {self.max_audio_seconds:.0f}")
        self.audio_seconds += seconds
        ticket.audio_seconds = seconds

    def leave(self, ticket: Ticket, finished: bool = True) -> None:
        """Release the ticket (once); ``finished``: it was answered (counts towards the drain rate)."""
        if ticket.left:
            return
        ticket.left = True
        self.requests -= 1
        self.audio_seconds = max(0.0, self.audio_seconds - ticket.audio_seconds)
        if finished:
            self._finished.append(self._clock())
