"""Engines run the models behind one interface (``base.Engine``); ``make_engine`` picks one by name.

    engine = make_engine(settings, {"pruned": Path(...)})     # settings.engine: torch | vllm
"""

from __future__ import annotations

from pathlib import Path

from ..settings import Settings
from .base import Engine, EngineRequest, EngineResult, ModelInfo, RequestHandle

__all__ = ["Engine", "EngineRequest", "EngineResult", "ModelInfo", "RequestHandle", "make_engine"]


def make_engine(settings: Settings, model_dirs: dict[str, Path]) -> Engine:
    if settings.engine == "torch":
        from .torch_engine import TorchEngine

        return TorchEngine(settings, model_dirs)
    if settings.engine == "vllm":
        from .vllm_engine import VllmEngine

        return VllmEngine(settings, model_dirs)
    raise ValueError(f"unknown engine {settings.engine!r}")
