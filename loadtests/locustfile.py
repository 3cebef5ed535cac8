"""Locust load test of the slimspeech server, for people who prefer Locust's web UI and CSV output.

    pip install locust 'slimspeech[loadtest]'     # or, from a checkout: pip install locust soundfile httpx
    LOADTEST_DATA=data/bench/test-clean.jsonl LOADTEST_MODELS=pruned,base LOADTEST_STREAM=1 \\
        locust -f loadtests/locustfile.py --host http://127.0.0.1:8000 \\
        --headless --users 8 --spawn-rate 8 --run-time 60s --csv runs/locust

Each simulated user is a closed loop (no wait between requests) that alternates the models, so
every model sees the same clips and tasks interleaved in time, as in ``slimspeech loadtest``.
Requests are named ``"<model> <task>"``, so Locust's table compares pruned and base line by line.
With ``LOADTEST_STREAM=1`` Locust's own response time stops at the response headers; the
full latency and the time to first token are reported as extra entries of type ``SSE``
(``"<model> <task> latency"`` and ``"... ttft"``).

Environment: LOADTEST_DATA (manifest, required), LOADTEST_MODELS (default pruned,base),
LOADTEST_TASK (default transcribe; e.g. transcribe,translate:fr), LOADTEST_STREAM (0/1),
LOADTEST_LIMIT (clips, default 32), LOADTEST_API_KEY.
``slimspeech loadtest`` (asyncio + httpx, open and closed loops, ratios, plots) is the reference
tool; this file shares its workload (``loadtests.workload``).
"""

from __future__ import annotations

import json
import os
import time
from functools import lru_cache

from locust import HttpUser, constant, events, task

try:
    from loadtests.workload import Workload, load_clips, parse_tasks, request_form
except ImportError:  # run from a checkout (locust puts this file's folder on the path, not the repo's root)
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from loadtests.workload import Workload, load_clips, parse_tasks, request_form


@lru_cache(maxsize=1)
def settings() -> tuple[Workload, list[str], bool, str | None]:
    data = os.environ.get("LOADTEST_DATA")
    if not data:
        raise RuntimeError("set LOADTEST_DATA to a JSONL manifest of the clips to send")
    workload = Workload(load_clips(data, int(os.environ.get("LOADTEST_LIMIT", "32"))),
                        parse_tasks(os.environ.get("LOADTEST_TASK", "transcribe")))
    models = [m.strip() for m in os.environ.get("LOADTEST_MODELS", "pruned,base").split(",") if m.strip()]
    stream = os.environ.get("LOADTEST_STREAM", "0").lower() in ("1", "true", "yes")
    return workload, models, stream, os.environ.get("LOADTEST_API_KEY")


def _fire(name: str, seconds: float, length: int = 0, exception: Exception | None = None) -> None:
    events.request.fire(request_type="SSE", name=name, response_time=seconds * 1000, response_length=length,
                        exception=exception, context={})


class SpeechUser(HttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.workload, self.models, self.stream, key = settings()
        if key:
            self.client.headers["Authorization"] = f"Bearer {key}"
        self.turn = 0

    @task
    def transcribe(self) -> None:
        model = self.models[self.turn % len(self.models)]
        clip, spec = self.workload.item(self.turn // len(self.models))
        self.turn += 1
        path, data = request_form(spec, model, stream=self.stream)
        name = f"{model} {spec.label}"
        files = {"file": (clip.filename, clip.audio, clip.mime)}
        t0 = time.perf_counter()
        with self.client.post(path, data=data, files=files, name=name, stream=self.stream,
                              catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
                return
            if not self.stream:
                r.success()
                return
            ttft, done, chars = None, False, 0
            for raw in r.iter_lines():
                line = raw.decode() if isinstance(raw, bytes) else raw
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if event.get("type") == "transcript.text.delta" and ttft is None:
                    ttft = time.perf_counter() - t0
                elif event.get("type") == "transcript.text.done":
                    done, chars = True, len(event.get("text", ""))
                elif "error" in event:
                    r.failure(f"stream error: {event['error']}")
                    return
            total = time.perf_counter() - t0
            if not done:
                r.failure("stream ended without transcript.text.done")
                return
            r.success()
        _fire(f"{name} latency", total, chars)
        _fire(f"{name} ttft", total if ttft is None else ttft)
