"""What the torch and vllm engines share: a BatchScheduler in front, one worker thread for model work.

    class MyEngine(BatchedEngine):
        def __init__(self, settings, model_dirs):
            super().__init__(settings, model_dirs, self._execute, "my-worker")
        async def _execute(self, model: str, batch: list[RequestHandle]) -> None: ...  # resolve each handle

``self._runners`` holds one loaded runner (with ``.info`` and ``.memory_stats()``) per served
model once it is ready; ``submit`` queues a clip for ``execute``. ``make_scheduler`` picks what
is in front (default: the static ``BatchScheduler``; the torch engine's default is the
``ContinuousScheduler``, which drives its own decode loops on ``self._executor``).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..admission import not_ready, shutting_down
from ..errors import ApiError
from ..settings import Settings
from .base import Engine, EngineRequest, ModelInfo, RequestHandle
from .scheduler import BatchScheduler, Execute


class BatchedEngine(Engine):
    def __init__(self, settings: Settings, model_dirs: dict[str, Path], execute: Execute, thread_name: str):
        self.settings = settings
        self.model_dirs = dict(model_dirs)
        self._runners: dict = {}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=thread_name)
        self._scheduler = self.make_scheduler(execute)
        self._ready = False
        self._stopping = False

    def make_scheduler(self, execute: Execute):
        """The scheduler in front of the worker thread: the static batcher, unless an engine says otherwise
        (it needs ``start``, ``submit``, ``depth``, ``in_flight`` and ``stop``)."""
        return BatchScheduler(execute, max_batch_size=self.settings.max_batch_size,
                              max_wait_s=self.settings.max_wait_ms / 1000.0)

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def _load_runner(self, name: str, path: Path):
        """Load one served model's torch runner in the worker thread; a failure names the model."""
        from speechllm.errors import ModelDirError

        from .runner import TorchRunner  # torch is imported here, in the engine, never by the HTTP layer

        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, TorchRunner.load, name, path, self.settings.device, self.settings.dtype)
        except Exception as exc:
            raise ModelDirError(f"model {name!r}: {exc}") from exc

    def models(self) -> dict[str, ModelInfo]:
        return {name: r.info for name, r in self._runners.items()}

    def submit(self, request: EngineRequest) -> RequestHandle:
        if self._stopping:
            raise shutting_down()
        if not self._ready:
            raise not_ready()
        if request.model not in self._runners:
            raise ApiError(404, f"model {request.model!r} is not served here", param="model", code="model_not_found")
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
