"""loadtests/locustfile.py against the live server. Locust itself is not installed here (gevent, Flask, ZeroMQ),
so a stand-in ``locust`` module supplies the four names the file uses, and its HTTP client (the
``requests``-style API Locust's HttpSession has: ``post(..., name=, stream=, catch_response=)`` as a
context manager, ``iter_lines``, ``success``/``failure``) is backed by httpx."""

from __future__ import annotations

import contextlib
import importlib
import sys
import types

import httpx
import pytest


class _Response:
    def __init__(self, r: httpx.Response, outcomes: list, name: str):
        self._r, self._outcomes, self._name = r, outcomes, name
        self.status_code = r.status_code

    @property
    def text(self) -> str:
        return self._r.read().decode()

    def iter_lines(self):
        for line in self._r.iter_lines():
            yield line.encode()

    def success(self):
        self._outcomes.append((self._name, "ok", None))

    def failure(self, message):
        self._outcomes.append((self._name, "fail", str(message)))


class _Client:
    def __init__(self, base_url: str):
        self.headers: dict = {}
        self.base_url = base_url
        self.outcomes: list = []

    @contextlib.contextmanager
    def post(self, path, data=None, files=None, name=None, stream=False, catch_response=False):
        assert catch_response
        with httpx.stream("POST", self.base_url + path, data=data, files=files, headers=self.headers,
                          timeout=30) as r:
            yield _Response(r, self.outcomes, name)


@pytest.fixture
def locustfile(monkeypatch):
    fired = []
    stub = types.ModuleType("locust")

    class HttpUser:
        pass

    stub.HttpUser = HttpUser
    stub.constant = lambda seconds: (lambda user: seconds)
    stub.task = lambda fn: fn
    stub.events = types.SimpleNamespace(request=types.SimpleNamespace(fire=lambda **kw: fired.append(kw)))
    monkeypatch.setitem(sys.modules, "locust", stub)
    monkeypatch.delitem(sys.modules, "loadtests.locustfile", raising=False)
    module = importlib.import_module("loadtests.locustfile")
    module.fired = fired
    yield module
    module.settings.cache_clear()
    sys.modules.pop("loadtests.locustfile", None)


def _user(module, url):
    user = module.SpeechUser()
    user.client = _Client(url)
    user.on_start()
    return user


def test_locust_user_streams_and_interleaves_models(locustfile, live_server, bench_manifest, monkeypatch):
    monkeypatch.setenv("LOADTEST_DATA", str(bench_manifest))
    monkeypatch.setenv("LOADTEST_TASK", "transcribe,translate:fr")
    monkeypatch.setenv("LOADTEST_STREAM", "1")
    user = _user(locustfile, live_server.url)
    for _ in range(4):
        user.transcribe()
    assert user.client.outcomes == [(n, "ok", None) for n in (
        "pruned transcribe", "base transcribe", "pruned translate_fr", "base translate_fr")]
    fired = locustfile.fired
    assert [f["name"] for f in fired[:2]] == ["pruned transcribe latency", "pruned transcribe ttft"]
    assert len(fired) == 8 and all(f["request_type"] == "SSE" and f["exception"] is None for f in fired)
    for latency, ttft in zip(fired[::2], fired[1::2]):
        assert 0 < ttft["response_time"] <= latency["response_time"]


def test_locust_user_plain_requests_and_failures(locustfile, live_server, bench_manifest, monkeypatch):
    monkeypatch.setenv("LOADTEST_DATA", str(bench_manifest))
    monkeypatch.setenv("LOADTEST_MODELS", "base,whisper-1")
    user = _user(locustfile, live_server.url)
    user.transcribe()
    user.transcribe()
    (ok, failed) = user.client.outcomes
    assert ok == ("base transcribe", "ok", None) and locustfile.fired == []
    assert failed[:2] == ("whisper-1 transcribe", "fail") and failed[2].startswith("HTTP 404")


def test_locustfile_needs_its_manifest(locustfile, monkeypatch):
    monkeypatch.delenv("LOADTEST_DATA", raising=False)
    with pytest.raises(RuntimeError, match="LOADTEST_DATA"):
        locustfile.settings()
