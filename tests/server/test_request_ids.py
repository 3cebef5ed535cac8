"""Request ids over HTTP on the real app: every answer (200, streams, 400, 401, 404, 413, 429, 500)
carries X-Request-Id; a sane client id is echoed, anything else replaced by a fresh one; the
server's log lines about a request carry its id, as text or JSON (``--log-format json``)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re

import numpy as np
import pytest

from server.logs import make_handler

from .conftest import ServerProcess, wav_bytes

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")

FRESH = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def server(make_server, model_pair):
    srv = make_server(models=model_pair, max_upload_mb=0.2, api_key="k3y")
    srv.app.router.add_api_route("/boom", _boom)  # fails as a bug would: only the last resort answers it
    return srv


async def _boom():
    raise RuntimeError("a bug the server did not expect")


AUTH = {"Authorization": "Bearer k3y"}


def _answers(server, speech: bytes, headers: dict) -> dict[str, object]:
    """One request of each kind -> {kind: response}."""
    h = {**AUTH, **headers}
    post = lambda data, **kw: server.post("/v1/audio/transcriptions", headers={**h, **kw.pop("headers", {})},
                                          files={"file": ("a.wav", data, "audio/wav")},
                                          data={"model": "base", **kw})
    out = {
        "health": server.get("/health", headers=h),
        "models": server.get("/v1/models", headers=h),
        "200": post(speech),
        "stream": post(speech, stream="true"),
        "400": post(b"not audio at all" * 50),
        "401": server.post("/v1/audio/transcriptions", headers={**headers, "Authorization": "Bearer wrong"},
                           files={"file": ("a.wav", speech, "audio/wav")}),
        "404": server.get("/nowhere", headers=h),
        "413": post(speech * 40),
        "500": server.get("/boom", headers=h),
    }
    admission = server.app.state.service.admission
    held = [admission.enter() for _ in range(admission.max_requests)]  # uploads in progress fill every slot
    try:
        out["429"] = post(speech)
    finally:
        for ticket in held:
            admission.leave(ticket)
    return out


def _check_statuses(answers):
    for kind, r in answers.items():
        want = {"health": 200, "models": 200, "stream": 200}.get(kind, int(kind) if kind.isdigit() else None)
        assert r.status_code == want, (kind, r.status_code, r.text[:300])
    assert answers["stream"].headers["content-type"].startswith("text/event-stream")
    assert answers["500"].json()["error"]["code"] == "internal_error"


def test_every_answer_carries_a_fresh_id(server, speech_bytes):
    answers = _answers(server, speech_bytes[0], {})
    _check_statuses(answers)
    ids = {kind: r.headers.get("x-request-id") for kind, r in answers.items()}
    assert all(i and FRESH.match(i) for i in ids.values()), ids
    assert len(set(ids.values())) == len(ids), "ids must differ between requests"


def test_a_sane_client_id_is_echoed_on_every_answer(server, speech_bytes):
    answers = _answers(server, speech_bytes[0], {"X-Request-Id": "client-id:42/ABC_x.y"})
    _check_statuses(answers)
    assert {kind: r.headers["x-request-id"] for kind, r in answers.items()} == \
        {kind: "client-id:42/ABC_x.y" for kind in answers}


@pytest.mark.parametrize("sent", ["x" * 129, "two words", "tab\there", "caf\u00e9".encode(), ""])
def test_an_insane_client_id_is_replaced(server, sent):
    r = server.get("/health", headers={"X-Request-Id": sent})
    assert r.status_code == 200 and FRESH.match(r.headers["x-request-id"]), r.headers
    assert server.get("/health", headers={"X-Request-Id": "y" * 128}).headers["x-request-id"] == "y" * 128


@contextlib.contextmanager
def captured_log(fmt: str):
    """The root logger's lines at INFO, as ``--log-format fmt`` writes them, into a string buffer."""
    stream = io.StringIO()
    handler = make_handler(fmt, stream)
    root = logging.getLogger()
    before = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(before)


@pytest.fixture
def json_log():
    """The server's log lines, as --log-format json writes them (JSON objects)."""
    with captured_log("json") as stream:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_lines_carry_the_request_id(server, speech_bytes, json_log):
    ok = server.post("/v1/audio/transcriptions", headers={**AUTH, "X-Request-Id": "ok-1"},
        files={"file": ("a.wav", speech_bytes[0], "audio/wav")}, data={"model": "base"})
    bad = server.post("/v1/audio/transcriptions", headers={**AUTH, "X-Request-Id": "bad-1"},
                      files={"file": ("a.wav", b"RIFF" + b"\0" * 400, "audio/wav")}, data={"model": "pruned"})
    boom = server.get("/boom", headers={**AUTH, "X-Request-Id": "boom-1"})
    assert (ok.status_code, bad.status_code, boom.status_code) == (200, 400, 500)
    lines = json_log()
    assert all(set(line) >= {"ts", "level", "logger", "request_id", "message"} for line in lines), lines
    by_id = {}
    for line in lines:
        by_id.setdefault(line["request_id"], []).append(line)
    print(json.dumps(lines, indent=1)[:3000])
    assert any("base transcribe: 200" in line["message"] for line in by_id["ok-1"]), by_id.get("ok-1")
    assert any("pruned transcribe: 400" in line["message"] and "cannot decode" in line["message"]
               for line in by_id["bad-1"]), by_id.get("bad-1")
    assert any(line["level"] == "error" and "RuntimeError" in line.get("exc", "") for line in by_id["boom-1"])


def test_text_log_lines_carry_the_request_id(server, speech_bytes):
    with captured_log("text") as stream:
        server.post("/v1/audio/transcriptions", headers={**AUTH, "X-Request-Id": "text-7"},
                    files={"file": ("a.wav", speech_bytes[0], "audio/wav")}, data={"model": "base"})
    assert re.search(r" INFO server\.service \[text-7\] base transcribe: 200, ", stream.getvalue()), stream.getvalue()


@pytest.mark.slow  # a server process
def test_serve_log_format_json(model_pair, speech_bytes):
    """``slimspeech serve --log-format json``: every line on stderr is JSON, uvicorn's access log included,
    and the access line and the service's line carry the request's id."""
    import httpx

    srv = ServerProcess(model_pair, "--log-level", "info", "--log-format", "json")
    try:
        r = httpx.post(f"{srv.url}/v1/audio/transcriptions", headers={"X-Request-Id": "proc-1"},
                       files={"file": ("a.wav", speech_bytes[0], "audio/wav")}, data={"model": "base"}, timeout=60)
        assert r.status_code == 200 and r.headers["x-request-id"] == "proc-1"
        r = httpx.post(f"{srv.url}/v1/audio/transcriptions", files={"file": ("a.wav", wav_bytes(np.zeros(0)), "audio/wav")},
                       data={"model": "base"}, timeout=60)
        assert r.status_code == 400 and FRESH.match(r.headers["x-request-id"])
        fresh = r.headers["x-request-id"]
    finally:
        srv.stop()
    text = srv.output()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # fails on any non-JSON line
    mine = [line for line in lines if line["request_id"] == "proc-1"]
    assert any(line["logger"] == "uvicorn.access" and "POST /v1/audio/transcriptions" in line["message"]
               for line in mine), mine
    assert any(line["logger"] == "server.service" and "200" in line["message"] for line in mine), mine
    assert any(line["request_id"] == fresh and "400" in line["message"] for line in lines)
    assert any(line["request_id"] == "-" and "ready" in line["message"] for line in lines)
