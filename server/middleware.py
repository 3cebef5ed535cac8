"""ASGI guards that act before a request body is read: the API key (401), admission (429/503) and
the upload limit (413); and, around them all, the request id (``X-Request-Id`` on every answer).

Both answer in the error envelope. The body limit counts bytes as they arrive, so an
oversized upload is refused without being read (or spooled) in full: at once when its
Content-Length is over the limit, else as soon as the running count passes it.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError, as_api_error
from .logs import HEADER, accept_request_id, request_id

if TYPE_CHECKING:
    from .admission import Admission

#: form fields besides the file (model, language, prompt, ...) ride on top of the upload limit
FORM_OVERHEAD_BYTES = 64 * 1024


async def _answer(error: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
    await error.response()(scope, receive, send)


class RequestIdMiddleware:
    """Every HTTP answer carries ``X-Request-Id``: the client's when sane (server.logs), else a new one.

    The outermost middleware, so 401, 413, 429, 503, errors and streams carry it too. The id is in
    ``request.state.request_id`` and in the logging context (``server.logs.request_id``) while the
    request runs. An exception nothing else answered becomes a 500 in the envelope here (Starlette's
    own 500 is sent outside every middleware, without the id), logged with the id by as_api_error.
    """

    _NAME = HEADER.lower().encode()

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = accept_request_id(Headers(scope=scope).get(HEADER))
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id.set(rid)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != self._NAME]
                message = {**message, "headers": [*headers, (self._NAME, rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:
                raise
            await _answer(as_api_error(exc), scope, receive, send_with_id)  # as_api_error logs it
        finally:
            request_id.reset(token)


class ApiKeyMiddleware:
    """``Authorization: Bearer <key>`` on every path under ``prefix``; /health, /ready, /metrics stay open."""

    def __init__(self, app: ASGIApp, api_key: str | None, prefix: str = "/v1/",
                 on_reject: Callable[[int], None] | None = None):
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.prefix = prefix
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            return await self.app(scope, receive, send)
        auth = Headers(scope=scope).get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key):
            return await self.app(scope, receive, send)
        if self.on_reject:
            self.on_reject(401)
        msg = ("missing API key: send 'Authorization: Bearer <key>'" if not auth
               else "invalid API key: send the server's key as 'Authorization: Bearer <key>'")
        await _answer(ApiError(401, msg, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}),
                      scope, receive, send)


class AdmissionMiddleware:
    """Admit each audio request (``POST`` under ``prefix``) before its body is read, and release its
    slot once the answer (a stream: its last byte) has been sent. The ticket rides in the ASGI
    scope's state (``request.state.ticket``) so the request can reserve its audio budget."""

    def __init__(self, app: ASGIApp, admission: Callable[[], "Admission"], prefix: str = "/v1/audio/",
                 on_reject: Callable[[int], None] | None = None):
        self.app = app
        self.admission = admission
        self.prefix = prefix
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(self.prefix):
            return await self.app(scope, receive, send)
        admission = self.admission()
        try:
            ticket = admission.enter()
        except ApiError as err:
            if self.on_reject:
                self.on_reject(err.status)
            return await _answer(err, scope, receive, send)
        scope.setdefault("state", {})["ticket"] = ticket
        try:
            await self.app(scope, receive, send)
        finally:
            admission.leave(ticket)


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes (+ form overhead) with 413, counting while reading."""

    def __init__(self, app: ASGIApp, limit: int, on_reject: Callable[[int], None] | None = None):
        self.app = app
        self.limit = limit
        self.max_body = limit + FORM_OVERHEAD_BYTES
        self.on_reject = on_reject

    def _error(self) -> ApiError:
        mib = self.limit / (1024 * 1024)
        return ApiError(413, f"upload too large: the limit is {mib:g} MiB (max_upload_mb): "
                             "send a shorter or compressed (flac, ogg) file", param="file", code="file_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            if self.on_reject:
                self.on_reject(413)
            return await _answer(self._error(), scope, receive, send)

        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _TooLarge()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    exceeded = True
                    raise _TooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to the aborted read (a parse error) is replaced by the 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            pass
        if exceeded and not started:
            if self.on_reject:
                self.on_reject(413)
            await _answer(self._error(), scope, receive, send)
