"""Every error the server answers with, in OpenAI's envelope:

    {"error": {"message": "...", "type": "invalid_request_error", "param": "file", "code": "invalid_audio"}}

``ApiError`` is raised by the HTTP layer and the service; ``speechllm.errors.SlimError`` (bad
audio, unknown task) keeps its own status and param; FastAPI's validation errors become 400s
naming the field; anything else is a bug: logged with its traceback, answered 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from speechllm.errors import AudioError, ModelDirError, SlimError, TaskError

log = logging.getLogger(__name__)

#: OpenAI's error ``type`` per status
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
    429: "rate_limit_error", 499: "client_closed_request", 500: "server_error", 503: "service_unavailable",
}
#: status of a request whose client went away before the answer (nginx's convention; never sent)
CLIENT_CLOSED = 499


def envelope(message: str, status: int = 400, *, param: str | None = None, code: str | None = None,
             type_: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_ or ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


class ApiError(Exception):
    """An error answered to the client: status, a message naming the problem and the fix, param, code."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return envelope(self.message, self.status, param=self.param, code=self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_slim_error(exc: SlimError) -> ApiError:
    code = ("invalid_audio" if isinstance(exc, AudioError) else "unsupported_task" if isinstance(exc, TaskError)
            else "model_not_found" if isinstance(exc, ModelDirError) else "invalid_value")
    return ApiError(exc.status_code, str(exc), param=exc.param, code=code)


def as_api_error(exc: BaseException) -> ApiError:
    """Any exception -> the ApiError to answer (a bug becomes a logged 500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, SlimError):
        return from_slim_error(exc)
    log.error("internal error", exc_info=exc)
    return ApiError(500, f"internal server error ({type(exc).__name__}): see the server log", code="internal_error")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts, param = [], None
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path", "header")]
        field = ".".join(loc) or None
        param = param or field
        msg = err.get("msg", "invalid value")
        if field == "file" and err.get("type") in ("value_error", "model_attributes_type", "is_instance_of"):
            msg = "must be an uploaded audio file (multipart file part), not a text value"
        parts.append(f"{field}: {msg}" if field else msg)
    return "; ".join(parts) or "invalid request", param


def install_error_handlers(app: FastAPI, on_validation_error=None) -> None:
    """Envelope handlers; ``on_validation_error(status)`` counts requests refused before any route code ran."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(SlimError)
    async def _slim_error(_request: Request, exc: SlimError):
        return from_slim_error(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        ctype = request.headers.get("content-type", "")
        if request.method == "POST" and not ctype.startswith("multipart/form-data"):
            message = (f"send multipart/form-data (file=@clip.wav, model=...), not {ctype[:60] or 'no body'}: "
                       + message)
        if on_validation_error is not None:
            on_validation_error(400)
        return ApiError(400, message, param=param, code="invalid_value").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        where = f"{request.method} {request.url.path[:200]}"
        message = {404: f"no such endpoint: {where} (see /docs: /v1/audio/transcriptions, "
                        "/v1/audio/translations, /v1/models, /health, /ready, /metrics)",
                   405: f"method not allowed: {where} (the audio endpoints take POST multipart/form-data)",
                   }.get(exc.status_code, str(exc.detail))
        code = {404: "not_found", 405: "method_not_allowed", 413: "file_too_large"}.get(exc.status_code)
        return ApiError(exc.status_code, message, code=code, headers=getattr(exc, "headers", None)).response()

    @app.exception_handler(Exception)
    async def _internal(_request: Request, exc: Exception):
        return as_api_error(exc).response()
