"""Robustness: every bad request gets its status in the error envelope, and the server still answers
a good request correctly afterwards."""

from __future__ import annotations

import asyncio
import threading

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import InProcessServer, wav_bytes

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")

LIMIT_MB = 0.25
MAX_SECONDS = 5.0


@pytest.fixture(scope="module")
def server(make_server, model_pair) -> InProcessServer:
    return make_server(models=model_pair, max_upload_mb=LIMIT_MB, max_audio_seconds=MAX_SECONDS)


@pytest.fixture(scope="module")
def good(server, speech_bytes):
    """Posts a good request and checks its answer is the one the server gave before any bad input."""
    expected = server.transcribe(speech_bytes[0], model="base").json()["text"]
    assert expected

    def check():
        r = server.transcribe(speech_bytes[0], model="base")
        assert r.status_code == 200 and r.json()["text"] == expected

    return check


def assert_envelope(r: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    err = body["error"]
    assert isinstance(err["message"], str) and len(err["message"]) > 10
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


def _nan_wav() -> bytes:
    samples = np.zeros(16000, dtype=np.float32)
    samples[100] = np.nan
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, 16000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def _noise(seconds: float) -> bytes:
    return wav_bytes((0.1 * np.random.default_rng(0).standard_normal(int(seconds * 16000))).astype(np.float32))


# name -> (fields or a callable(server, model_pair) -> response, status, param, code)
AUDIO_CASES = {
    "undecodable": (b"RIFF\x00\x00\x00\x00WAVEthis is not audio" * 20, 400, "file", "invalid_audio"),
    "empty": (b"", 400, "file", "invalid_audio"),
    "nan": (_nan_wav(), 400, "file", "invalid_audio"),
    "over_long": (_noise(MAX_SECONDS + 1), 400, "file", "invalid_audio"),
}


@pytest.mark.parametrize("case", list(AUDIO_CASES))
def test_bad_audio(server, good, case):
    audio, status, param, code = AUDIO_CASES[case]
    err = assert_envelope(server.transcribe(audio, model="base"), status, param, code)
    if case == "over_long":
        assert "5 s limit" in err["message"]
    good()


def test_upload_over_the_limit_by_content_length(server, good):
    big = _noise(10.0)  # 320 KB > 0.25 MiB
    assert len(big) > LIMIT_MB * 2**20
    err = assert_envelope(server.transcribe(big, model="base"), 413, "file", "file_too_large")
    assert "0.25 MiB" in err["message"]
    good()


def test_upload_over_the_limit_while_streaming_the_body(server, good):
    """No Content-Length (chunked): the count of received bytes trips the limit mid-body."""
    req = httpx.Request("POST", "http://test/v1/audio/transcriptions", data={"model": "base"},
                        files={"file": ("big.wav", b"\0" * (2 * 2**20), "audio/wav")})
    body, ctype = req.read(), req.headers["content-type"]
    sent = []

    async def chunks():
        for i in range(0, len(body), 64 * 1024):
            sent.append(i)
            yield body[i:i + 64 * 1024]

    r = server.post("/v1/audio/transcriptions", content=chunks(), headers={"content-type": ctype})
    assert_envelope(r, 413, "file", "file_too_large")
    assert len(sent) * 64 * 1024 < len(body)  # refused before the whole body was read
    good()


@pytest.mark.parametrize("model", ["nope", "../base", "/etc/passwd", "PRUNED"])
def test_unknown_model_is_404_and_never_a_path(server, good, speech_bytes, model_pair, model):
    err = assert_envelope(server.transcribe(speech_bytes[0], model=model), 404, "model", "model_not_found")
    assert "pruned, base" in err["message"]
    # a real model dir's path is not a model name either
    assert_envelope(server.transcribe(speech_bytes[0], model=model_pair["base"]), 404, "model")
    assert list(server.app.state.engine.models()) == ["pruned", "base"]
    good()


FIELD_CASES = {
    "file_as_text_path": ({"file": "/etc/passwd", "model": "base"}, None, 400, "file"),
    "no_file": ({"model": "base"}, None, 400, "file"),
    "response_format": ({"model": "base", "response_format": "xml"}, "audio", 400, "response_format"),
    "temperature_range": ({"model": "base", "temperature": "5"}, "audio", 400, "temperature"),
    "temperature_type": ({"model": "base", "temperature": "hot"}, "audio", 400, "temperature"),
    "stream_type": ({"model": "base", "stream": "maybe"}, "audio", 400, "stream"),
    "word_timestamps": ({"model": "base", "timestamp_granularities[]": "word"}, "audio", 400,
                        "timestamp_granularities"),
    "stream_srt": ({"model": "base", "stream": "true", "response_format": "srt"}, "audio", 400, "stream"),
    "language": ({"model": "base", "language": "fr"}, "audio", 400, "language"),
    "target_language": ({"model": "base", "target_language": "xx"}, "audio", 400, "target_language"),
    "model_too_long": ({"model": "m" * 500}, "audio", 400, "model"),
}


@pytest.mark.parametrize("case", list(FIELD_CASES))
def test_bad_fields_are_400_in_the_envelope(server, good, speech_bytes, case):
    data, file, status, param = FIELD_CASES[case]
    endpoint = "translations" if case == "target_language" else "transcriptions"
    files = {"file": ("a.wav", speech_bytes[0], "audio/wav")} if file else None
    if case == "file_as_text_path":
        r = server.post(f"/v1/audio/{endpoint}", files={"model": (None, "base"), "file": (None, "/etc/passwd")})
    else:
        r = server.post(f"/v1/audio/{endpoint}", data=data, files=files)
    err = assert_envelope(r, status, param)
    assert "root:" not in err["message"]  # a path in a field is never opened
    good()


def test_not_multipart_routes_and_methods(server, good):
    assert_envelope(server.post("/v1/audio/transcriptions", json={"file": "x", "model": "base"}), 400)
    assert_envelope(server.get("/v1/audio/transcriptions"), 405)
    assert_envelope(server.get("/v1/nothing-here"), 404)
    good()


def test_errors_are_counted_by_status(server, speech_bytes):
    server.transcribe(speech_bytes[0], model="nope")
    server.transcribe(b"", model="base")
    fams = {f.name: f for f in text_string_to_metric_families(server.get("/metrics").text)}
    by = {(s.labels["model"], s.labels["status"]): s.value for s in fams["slimspeech_requests"].samples
          if s.name.endswith("_total")}
    assert by[("unknown", "404")] >= 1 and by[("base", "400")] >= 1 and by[("unknown", "413")] >= 1


def test_api_key(make_server, model_pair, speech_bytes):
    server = make_server(models=model_pair, api_key="s3cret")
    assert_envelope(server.transcribe(speech_bytes[0], model="base"), 401, code="invalid_api_key")
    wrong = server.post("/v1/audio/transcriptions", files={"file": ("a.wav", speech_bytes[0])},
                        data={"model": "base"}, headers={"Authorization": "Bearer nope"})
    assert_envelope(wrong, 401, code="invalid_api_key")
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert_envelope(server.get("/v1/models"), 401)
    assert server.get("/health").status_code == 200 and server.get("/ready").status_code == 200
    assert server.get("/metrics").status_code == 200

    async def with_key():  # the openai client sends the key as a bearer token
        return await server.openai.audio.transcriptions.create(file=("a.wav", speech_bytes[0]), model="base")

    assert server.run(with_key).text


def test_full_queue_is_429_with_retry_after(make_server, model_pair, speech_bytes):
    server = make_server(models=model_pair, max_batch_size=1, max_wait_ms=0, max_queue=2)
    engine = server.app.state.engine
    gate = threading.Event()
    engine._executor.submit(gate.wait)  # the worker is busy: nothing leaves the queue

    async def burst():
        async def one():
            return await server.http.post("/v1/audio/transcriptions", data={"model": "base"},
                                          files={"file": ("a.wav", speech_bytes[0], "audio/wav")})

        tasks = [asyncio.ensure_future(one()) for _ in range(6)]
        for _ in range(1000):  # until every request is either answered or held by the engine
            if sum(t.done() for t in tasks) + engine._scheduler.in_flight() == 6:
                break
            await asyncio.sleep(0.01)
        early = [t.result() for t in tasks if t.done()]
        gate.set()
        return early, await asyncio.gather(*tasks)

    early, responses = server.run(burst)
    refused = [r for r in responses if r.status_code == 429]
    ok = [r for r in responses if r.status_code == 200]
    # at most 1 dispatched + 2 queued are accepted; the rest are refused at once, not after the wait
    assert len(ok) + len(refused) == 6 and 2 <= len(ok) <= 3
    assert len(early) == len(refused) and all(r.status_code == 429 for r in early)
    for r in refused:
        assert_envelope(r, 429, code="queue_full")
        assert int(r.headers["retry-after"]) >= 1
    assert len({r.json()["text"] for r in ok}) == 1
    assert server.transcribe(speech_bytes[0], model="base").json()["text"] == ok[0].json()["text"]
