"""GET /health (the process answers), /ready (models loaded and warmed up, else 503), /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ..errors import ApiError
from ..metrics import CONTENT_TYPE

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health(request: Request) -> dict:
    error = getattr(request.app.state, "load_error", None)
    if error:
        raise ApiError(503, f"model loading failed: {error}", code="load_failed")
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> dict:
    engine = request.app.state.engine
    error = getattr(request.app.state, "load_error", None)
    if error:
        raise ApiError(503, f"model loading failed: {error}", code="load_failed")
    if not engine.ready:
        raise ApiError(503, "not ready: models are loading or the server is stopping", code="not_ready",
                       headers={"Retry-After": "1"})
    return {"status": "ready", "engine": engine.name, "models": list(engine.models())}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
