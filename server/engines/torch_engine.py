"""Engine ``torch``: the dynamic batcher (scheduler.py) in front of torch model runners (runner.py).

    engine = TorchEngine(settings, {"pruned": Path("runs/export"), "base": Path("runs/base")})

All model work runs in one worker thread, off the event loop: loading, warm-up and every
batch (one device, batches one after another; the event loop keeps accepting, queueing and
streaming meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path

from ..errors import ApiError
from ..settings import Settings
from .base import RequestHandle
from .scheduler import BatchedEngine

log = logging.getLogger(__name__)


class TorchEngine(BatchedEngine):
    name = "torch"

    def __init__(self, settings: Settings, model_dirs: dict[str, Path]):
        super().__init__(settings, model_dirs, self._execute, "slimspeech-model")
        self._batch_seconds = 0.0  # moving average, for Retry-After

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        from .runner import TorchRunner  # torch is imported here, in the engine, never by the HTTP layer

        loop = asyncio.get_running_loop()
        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        for name, path in self.model_dirs.items():
            runner = await loop.run_in_executor(self._executor, TorchRunner.load, name, path,
                                                self.settings.device, self.settings.dtype)
            t = time.perf_counter()
            await loop.run_in_executor(self._executor, runner.warmup)
            log.info("model %r warmed up in %.2f s", name, time.perf_counter() - t)
            self._runners[name] = runner
        self._scheduler.start()
        self._ready = not self._stopping

    async def stop(self) -> None:
        self._stopping = True
        self._ready = False
        await self._scheduler.stop()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    # ---- requests -----------------------------------------------------------------------
    async def _execute(self, model: str, batch: list[RequestHandle]) -> None:
        t = time.perf_counter()
        results = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._runners[model].run_batch, batch)
        took = time.perf_counter() - t
        self._batch_seconds = took if not self._batch_seconds else 0.8 * self._batch_seconds + 0.2 * took
        for handle, result in zip(batch, results):
            if result is None:
                handle._fail(ApiError(499, "request cancelled: the client went away", code="cancelled"))
            else:
                handle._finish(result)

    # ---- introspection ------------------------------------------------------------------
    def retry_after_seconds(self) -> int:
        batches = math.ceil(self._scheduler.in_flight() / self.settings.max_batch_size)
        return max(1, math.ceil(batches * (self._batch_seconds or 0.1)))
