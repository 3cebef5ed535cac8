"""The engine interface: what the HTTP layer needs from whatever runs the models.

    engine = TorchEngine(settings, {"pruned": Path(...), "base": Path(...)})
    await engine.start()                          # load + warm up every model; then engine.ready
    handle = engine.submit(EngineRequest("pruned", Task("transcribe"), wav, stream=True))
    async for delta in handle.deltas(): ...       # text pieces as tokens are decoded (stream=True)
    result = await handle.result()                # EngineResult: text, tokens, timings
    handle.cancel()                               # the client went away: stop decoding it
    await engine.stop()                           # refuse new work, finish what was accepted

An ``EngineRequest`` is one clip within the model's audio window (the service splits longer
audio first). ``submit`` never blocks and never refuses for load: admission (server/admission.py)
decided that before the upload was read; it raises ``ApiError`` 503 only once the engine is
stopping. Nothing here imports torch: engines load it themselves.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable

import numpy as np

from speechllm.tasks import PromptBook, Task, parse_task

from ..errors import ApiError


@dataclass
class ModelInfo:
    """A loaded model as the HTTP layer sees it (plain data, no tensors)."""

    name: str
    path: Path
    family: str
    decoder_layers: int
    parameters: int
    weight_bytes: int
    max_audio_seconds: float
    max_new_tokens: int
    prompts: PromptBook
    provenance: dict = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float32"
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def source_language(self) -> str:
        return self.prompts.source_language

    def task_labels(self) -> list[str]:
        return [parse_task(t).label for t in self.prompts.supported()]


@dataclass
class EngineRequest:
    model: str
    #: resolved against the model's prompts (``ModelInfo.prompts.resolve``: a translation has its
    #: target language), once, by whoever builds the request; engines use it as it is
    task: Task
    #: (S,) float32 mono 16 kHz, at most the model's max_audio_seconds
    audio: np.ndarray
    #: produce text deltas while decoding (handle.deltas())
    stream: bool = False
    request_id: str = ""


@dataclass
class EngineResult:
    text: str
    token_ids: list[int]
    #: mean log-probability of the generated tokens (None when the engine cannot tell)
    avg_logprob: float | None
    prompt_tokens: int
    queue_seconds: float
    encoder_seconds: float
    decode_seconds: float
    #: from submit to the first generated token (None: no token was generated)
    time_to_first_token: float | None
    batch_size: int


_END = object()


class TextDeltas:
    """Incremental detokenization of one request: token ids in, new text out (for streaming).

    ``decode(ids) -> str`` is the model's full decode; a delta is held back while the text ends in
    an incomplete UTF-8 sequence or while decoding rewrites what was already sent.
    """

    def __init__(self, decode):
        self.decode = decode
        self.ids: list[int] = []
        self.sent = ""

    def push(self, ids) -> str:
        self.ids.extend(ids)
        return self._advance(self.decode(self.ids), hold_partial=True)

    def tail(self, text: str) -> str:
        """What is left to send once the final ``text`` is known."""
        return self._advance(text, hold_partial=False)

    def _advance(self, text: str, hold_partial: bool) -> str:
        if hold_partial and text.endswith("\ufffd"):
            return ""
        if text.startswith(self.sent) and len(text) > len(self.sent):
            delta, self.sent = text[len(self.sent):], text
            return delta
        return ""


class RequestHandle:
    """One submitted request: its result future, its delta stream and its cancel flag.

    Consumer side (the service): ``result()``, ``deltas()``, ``cancel()``. Producer side (engines),
    on the event loop thread: ``emit(text)``, ``finish(result)``, ``fail(error)``, and
    ``on_cancel(callback)`` to be told when the client goes away (every registered callback runs
    once); worker threads go through ``loop.call_soon_threadsafe``. ``cancelled`` is read by
    worker threads to stop decoding a row.
    """

    def __init__(self, request: EngineRequest):
        self.request = request
        self.loop = asyncio.get_running_loop()
        self.submitted_at = time.perf_counter()
        self.dispatched_at: float | None = None
        self.first_token_at: float | None = None
        self.cancelled = False
        self._future: asyncio.Future = self.loop.create_future()
        self._deltas: asyncio.Queue = asyncio.Queue()
        self._cancel_callbacks: list[Callable[["RequestHandle"], None]] = []

    # ---- consumer side ----------------------------------------------------------------
    async def result(self) -> EngineResult:
        return await asyncio.shield(self._future)

    async def deltas(self) -> AsyncIterator[str]:
        """Text pieces in order until the request ends (then await ``result()``)."""
        while True:
            item = await self._deltas.get()
            if item is _END:
                return
            yield item

    def cancel(self) -> None:
        if self.cancelled or self._future.done():
            return
        self.cancelled = True
        for callback in self._cancel_callbacks:
            callback(self)
        self.fail(ApiError(499, "request cancelled: the client went away", code="cancelled"))

    @property
    def done(self) -> bool:
        return self._future.done()

    # ---- producer side (event loop thread) ----------------------------------------------
    def on_cancel(self, callback: Callable[["RequestHandle"], None]) -> None:
        """Call ``callback(handle)`` when the request is cancelled (queued: drop it; decoding: abort it)."""
        self._cancel_callbacks.append(callback)

    def emit(self, text: str) -> None:
        """A streamed text delta."""
        if text and not self._future.done():
            self._deltas.put_nowait(text)

    def finish(self, result: EngineResult) -> None:
        if not self._future.done():
            self._future.set_result(result)
            self._deltas.put_nowait(_END)

    def fail(self, exc: BaseException) -> None:
        if not self._future.done():
            self._future.set_exception(exc)
            self._future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            self._deltas.put_nowait(_END)


class Engine(ABC):
    """Runs the served models. Implementations: ``torch`` (dynamic batcher), ``vllm`` (vLLM's AsyncLLM)."""

    name: str = "engine"

    @abstractmethod
    async def start(self) -> None:
        """Load and warm up every model; afterwards ``ready`` is True."""

    @abstractmethod
    async def stop(self) -> None:
        """Refuse new requests, finish the accepted ones, release the models."""

    @abstractmethod
    def submit(self, request: EngineRequest) -> RequestHandle:
        """Queue one clip of a served model; raises ApiError 503 once stopping."""

    @abstractmethod
    def models(self) -> dict[str, ModelInfo]:
        """Served name -> ModelInfo, once loaded (empty before)."""

    @property
    @abstractmethod
    def ready(self) -> bool:
        """Models loaded and warmed up, and not stopping."""

    @property
    def stopping(self) -> bool:
        """Stop was called: no new request is taken, accepted ones finish."""
        return False

    def queue_depth(self) -> int:
        return 0

    def engine_stats(self) -> dict[str, dict[str, float]]:
        """Per model, the engine's own scheduler figures where it has them (vllm: running, waiting,
        kv_cache_usage); {} for engines without them."""
        return {}

    def memory_stats(self) -> dict[str, float]:
        """Device memory, e.g. {"cuda_allocated_bytes": ..., "cuda_peak_bytes": ...}; {} on CPU."""
        return {}
