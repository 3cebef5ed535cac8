"""Request ids and the server's log lines (text or JSON), each carrying the id of the request it is about.

    request_id.set("9f3c...")            # RequestIdMiddleware does, for each HTTP request
    current_request_id()                 # -> "9f3c..." in that request's task and what it starts
    configure_logging("info", "json")    # slimspeech serve: one JSON object per line on stderr

An id lives in a context variable, so the request's task and the tasks it creates see it; work run
in a thread pool sees it when submitted with ``contextvars.copy_context().run`` (the service does).
Engine threads log the id their request carries (``EngineRequest.request_id``: ``<id>-<chunk>``).

A client's ``X-Request-Id`` is kept when it is sane: 1-128 visible ASCII characters (no spaces or
control characters, which would let a client forge log lines or headers); else the server makes one
(32 hex digits).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid

HEADER = "X-Request-Id"
_SANE = re.compile(r"^[\x21-\x7e]{1,128}$")

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("slimspeech_request_id", default=None)


def current_request_id() -> str | None:
    return request_id.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(sent: str | None) -> str:
    """The client's id when it is sane, else a new one."""
    return sent if sent is not None and _SANE.match(sent) else new_request_id()


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id``: the current request's id, ``-`` outside requests (kept when set already)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get() or "-"
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, request_id, message (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name,
               "request_id": getattr(record, "request_id", None) or request_id.get(),
               "message": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def make_handler(fmt: str = "text", stream=None) -> logging.Handler:
    """A stream handler (stderr by default) whose lines carry request ids, as text or JSON."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(level: str = "info", fmt: str = "text", stream=None) -> logging.Handler:
    """The root logger writes every line (ours, uvicorn's, its access log) through one handler, which
    replaces the root's others (the CLI's basicConfig). Returns that handler; ``uvicorn_log_config()``
    hands uvicorn's loggers to it."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = make_handler(fmt, stream)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def uvicorn_log_config(level: str = "info") -> dict:
    """uvicorn's loggers without handlers of their own: their lines go up to the root's handler."""
    loggers = {name: {"handlers": [], "level": level.upper(), "propagate": True}
               for name in ("uvicorn", "uvicorn.error", "uvicorn.access")}
    return {"version": 1, "disable_existing_loggers": False, "loggers": loggers}
