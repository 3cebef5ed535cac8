"""GET /v1/models and /v1/models/{id}: the served models, in OpenAI's list shape plus what pruning changed.

Each entry: id, object, created, owned_by, and family, decoder_layers, parameters,
weight_bytes, tasks, languages, max_audio_seconds (the window; longer audio is split), device,
dtype and a provenance summary (parent model, removed layers, healing, scores: whatever the
model dir's provenance.json holds, large arrays left out, absolute paths cut to their last part).
"""

from __future__ import annotations

import re
from pathlib import PurePath, PureWindowsPath

from fastapi import APIRouter, Request

from ..engines.base import ModelInfo
from ..schemas import errors
from ..service import SpeechService

router = APIRouter(prefix="/v1/models", tags=["models"])

_MAX_LIST = 64
_WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]")


def _public(text: str) -> str:
    """A string fit for a response: an absolute path (where a model was built, on some machine) is
    cut to its last component, the name of the dir or file; long strings are shortened."""
    if text.startswith(("/", "~")) or _WINDOWS_PATH.match(text):
        text = PureWindowsPath(text).name if "\\" in text else (PurePath(text).name or text)
    return text if len(text) <= 500 else text[:500] + "..."


def summarize(value, depth: int = 0):
    """Provenance without its bulky parts or machine paths: scalars, short lists of scalars, dicts 3
    levels deep."""
    if isinstance(value, str):
        return _public(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        if len(value) <= _MAX_LIST and all(isinstance(v, (str, int, float, bool)) or v is None for v in value):
            return [summarize(v, depth + 1) for v in value]
        return None
    if isinstance(value, dict) and depth < 3:
        out = {}
        for k, v in value.items():
            s = summarize(v, depth + 1)
            if s is not None or v is None:
                out[str(k)] = s
        return out
    return None


def describe(info: ModelInfo) -> dict:
    return {
        "id": info.name, "object": "model", "created": info.created, "owned_by": "slimspeech",
        "family": info.family, "decoder_layers": info.decoder_layers, "parameters": info.parameters,
        "weight_bytes": info.weight_bytes, "tasks": info.prompts.supported(),
        "languages": {"source": info.source_language, "targets": dict(info.prompts.languages)},
        "max_audio_seconds": info.max_audio_seconds, "device": info.device, "dtype": info.dtype,
        "provenance": summarize(info.provenance) or {},
    }


@router.get("", responses=errors(401, 503))
async def list_models(request: Request) -> dict:
    service: SpeechService = request.app.state.service
    service.admission.check()
    return {"object": "list", "data": [describe(info) for info in service.engine.models().values()]}


@router.get("/{model_id}", responses=errors(401, 404, 503))
async def get_model(model_id: str, request: Request) -> dict:
    return describe(request.app.state.service.model(model_id))
