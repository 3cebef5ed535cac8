"""Engine ``torch``: a scheduler (scheduler.py) in front of torch model runners (runner.py).

    engine = TorchEngine(settings, {"pruned": Path("runs/export"), "base": Path("runs/base")})

``settings.scheduler`` picks how requests share the device:

* ``continuous`` (default): iteration-level batching. ``ContinuousScheduler`` drives one
  ``decode.DecodeLoop`` per model: a request joins its model's running decode at the next step
  (its encoder pass and prefill batched with the other newcomers) and leaves when it finishes;
  nothing waits for a batch to end, and a lone request on an idle server starts at once.
* ``static``: the dynamic batcher. ``BatchScheduler`` forms a batch (up to ``max_batch_size``,
  waiting up to ``max_wait_ms`` for it to fill) and ``TorchRunner.run_batch`` runs it to the end
  with HF ``generate``; requests arriving meanwhile wait for the next batch. Kept for comparison
  (scripts/bench_server.py) and for decoders the row batcher cannot run (chunked attention, layers with
  recurrent state: ``speechllm.generate.supports_row_batching``).

All model work runs in one worker thread, off the event loop: loading, warm-up and every
batch or step (one device; the event loop keeps accepting, queueing and streaming meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from speechllm.errors import SlimError

from ..errors import ApiError, as_api_error
from ..settings import Settings
from .base import RequestHandle
from .batched import BatchedEngine
from .scheduler import ContinuousScheduler, Execute

log = logging.getLogger(__name__)


class TorchEngine(BatchedEngine):
    name = "torch"

    def __init__(self, settings: Settings, model_dirs: dict[str, Path]):
        super().__init__(settings, model_dirs, self._execute, "slimspeech-model")

    @property
    def continuous(self) -> bool:
        return self.settings.scheduler == "continuous"

    def make_scheduler(self, execute: Execute):
        if self.continuous:
            return ContinuousScheduler(self._executor, max_batch_size=self.settings.max_batch_size,
                                       max_wait_s=self.settings.max_wait_ms / 1000.0,
                                       waiting_served_ratio=self.settings.waiting_served_ratio,
                                       max_waiting_steps=self.settings.max_waiting_steps)
        return super().make_scheduler(execute)

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        for name, path in self.model_dirs.items():
            runner = await self._load_runner(name, path)
            if self.continuous:
                from speechllm.generate import supports_row_batching

                reason = supports_row_batching(runner.model)
                if reason:
                    raise SlimError(f"model {name!r}: the continuous scheduler cannot decode {reason}: "
                                    "serve it with --scheduler static", param="scheduler")
            t = time.perf_counter()
            await loop.run_in_executor(self._executor, runner.warmup, self.continuous)
            log.info("model %r warmed up in %.2f s", name, time.perf_counter() - t)
            self._runners[name] = runner
        if self.continuous:
            from .decode import (
                DecodeLoop,  # torch: imported by the engine, never by the HTTP layer
            )

            self._scheduler.start({name: DecodeLoop(runner) for name, runner in self._runners.items()})
        else:
            self._scheduler.start()
        self._ready = not self._stopping

    async def stop(self) -> None:
        self._stopping = True
        self._ready = False
        await self._scheduler.stop()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    # ---- requests (static scheduler) ----------------------------------------------------
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
