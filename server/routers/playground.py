"""The playground: ``GET /`` (server/static/playground.html) and its files under ``/static``.

One page, served by the app itself (no CDN, no build step): record or upload a clip and run it on
every served model side by side, over the same public API a client uses (``GET /v1/models``,
streamed ``POST /v1/audio/...``, the API key in ``Authorization`` when the server has one).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def playground() -> FileResponse:
    return FileResponse(STATIC / "playground.html", media_type="text/html")


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
