"""Engine ``torch``: the dynamic batcher (scheduler.py) in front of torch model runners (runner.py).

    engine = TorchEngine(settings, {"pruned": Path("runs/export"), "base": Path("runs/base")})

All model work runs in one worker thread, off the event loop: loading, warm-up and every
batch (one device, batches one after another; the event loop keeps accepting, queueing and
streaming meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from ..errors import ApiError, as_api_error
from ..settings import Settings
from .base import RequestHandle
from .batched import BatchedEngine

log = logging.getLogger(__name__)


class TorchEngine(BatchedEngine):
    name = "torch"

    def __init__(self, settings: Settings, model_dirs: dict[str, Path]):
        super().__init__(settings, model_dirs, self._execute, "slimspeech-model")

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        for name, path in self.model_dirs.items():
            runner = await self._load_runner(name, path)
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
        results = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._runners[model].run_batch, batch)
        for handle, result in zip(batch, results):
            if result is None:
                handle.fail(ApiError(499, "request cancelled: the client went away", code="cancelled"))
            elif isinstance(result, Exception):
                handle.fail(as_api_error(result))
            else:
                handle.finish(result)
