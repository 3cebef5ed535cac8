"""GET /v1/models and /v1/models/{id}: the served models, in OpenAI's list shape plus what pruning changed.

Each entry: id, object, created, owned_by, and family, decoder_layers, parameters,
weight_bytes, tasks, languages, max_audio_seconds (the window; longer audio is split), device,
dtype and a provenance summary (parent model, removed layers, healing, scores: whatever the
model dir's provenance.json holds, large arrays left out).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..engines.base import ModelInfo
from ..errors import ApiError
from ..service import SpeechService

router = APIRouter(prefix="/v1/models", tags=["models"])

_MAX_LIST = 64


def summarize(value, depth: int = 0):
    """Provenance without its bulky parts: scalars, short lists of scalars, dicts 3 levels deep."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value if not isinstance(value, str) or len(value) <= 500 else value[:500] + "..."
    if isinstance(value, (list, tuple)):
        if len(value) <= _MAX_LIST and all(isinstance(v, (str, int, float, bool)) or v is None for v in value):
            return list(value)
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


def _service(request: Request) -> SpeechService:
    service: SpeechService = request.app.state.service
    if not service.engine.ready:
        raise ApiError(503, "models are still loading: retry when /ready answers 200", code="not_ready")
    return service


@router.get("")
async def list_models(request: Request) -> dict:
    service = _service(request)
    return {"object": "list", "data": [describe(info) for info in service.engine.models().values()]}


@router.get("/{model_id}")
async def get_model(model_id: str, request: Request) -> dict:
    return describe(_service(request).model(model_id))
