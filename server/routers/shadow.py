"""GET /v1/shadow: shadow mode's summary per (model, reference, task): count, mean, p90 and the worst
examples with their request ids and both texts (server/shadow.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..errors import ApiError
from ..schemas import errors

router = APIRouter(tags=["shadow"])


@router.get("/v1/shadow", responses=errors(401, 404))
async def shadow_summary(request: Request) -> dict:
    shadow = request.app.state.service.shadow
    if shadow is None:
        raise ApiError(404, "shadow mode is off: start the server with --shadow MODEL=REFERENCE[:FRACTION] "
                            "(or SLIMSPEECH_SHADOW)", code="shadow_off")
    return shadow.summary()
