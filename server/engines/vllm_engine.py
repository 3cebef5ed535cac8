"""Engine ``vllm`` (placeholder): the decoder in vLLM's continuous-batching engine, fed prompt
embeddings from the encoder + projector. It implements ``server.engines.base.Engine``; until
it lands, choosing it fails at start-up with one clear line.
"""

from __future__ import annotations

from pathlib import Path

from speechllm.errors import SlimError

from ..settings import Settings
from .base import Engine


class VllmEngine(Engine):
    name = "vllm"

    def __init__(self, settings: Settings, model_dirs: dict[str, Path]):
        raise SlimError("engine 'vllm' is not available yet: use --engine torch (SLIMSPEECH_ENGINE=torch)",
                        param="engine")

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def submit(self, request):
        raise NotImplementedError

    def models(self):
        raise NotImplementedError

    @property
    def ready(self) -> bool:
        return False
