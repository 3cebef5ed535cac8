"""GET /health (the process answers), /ready (models loaded and warmed up, else 503), /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from ..admission import load_failed
from ..metrics import CONTENT_TYPE
from ..schemas import Health, Ready, errors

router = APIRouter(tags=["ops"])


@router.get("/health", response_model=Health, responses=errors(503))
async def health(request: Request) -> dict:
    error = request.app.state.service.load_error
    if error:
        raise load_failed(error)
    return {"status": "ok"}


@router.get("/ready", response_model=Ready, responses=errors(503))
async def ready(request: Request) -> dict:
    service = request.app.state.service
    service.admission.check()
    return {"status": "ready", "engine": service.engine.name, "models": list(service.engine.models())}


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}})
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
