"""One timed request over HTTP (httpx), non-streaming or streaming (SSE), -> a per-request record.

    async with make_client("http://127.0.0.1:8000") as client:
        rec = await send(client, clip, task, "pruned", stream=True)
        rec.latency_s, rec.ttft_s, rec.status, rec.output_tokens

Streaming parses server-sent events of both shapes in use: OpenAI's
(``{"type": "transcript.text.delta", "delta": ...}`` then ``transcript.text.done`` with ``usage``)
and vLLM's (``{"choices": [{"delta": {"content": ...}}]}``, ``usage.completion_tokens``,
``data: [DONE]``), so the same load test can be pointed at a vLLM transcription server.
Time to first token (TTFT) is the time to the first non-empty text delta.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field

import httpx

from .workload import Clip, TaskSpec, request_form

#: status recorded for a request that got no HTTP answer (connection refused, reset, timeout)
NO_RESPONSE = 0


@dataclass
class Record:
    """One request. Times are seconds; ``sent``/``done`` are on the run's clock (seconds since its start)."""

    model: str
    task: str
    clip: str
    audio_s: float
    level: str = ""
    window: int = -1
    warmup: bool = False
    scheduled: float | None = None  # open loop: when the Poisson process said to send it
    sent: float = 0.0
    done: float = 0.0
    latency_s: float = 0.0
    ttft_s: float | None = None
    status: int = NO_RESPONSE
    ok: bool = False
    error: str | None = None
    output_tokens: int | None = None
    chars: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        if not out["extra"]:
            del out["extra"]
        return out


def make_client(base_url: str, *, timeout_s: float = 60.0, max_connections: int = 1024,
                api_key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    # every request gets its own connection if it needs one: an open loop must never wait on the client's pool
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=min(max_connections, 128))
    return httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, limits=limits,
                             timeout=httpx.Timeout(timeout_s, pool=None))


def _error_message(body: bytes) -> str:
    try:
        err = json.loads(body)["error"]
        return str(err.get("message") if isinstance(err, dict) else err)[:300]
    except Exception:
        return body[:300].decode("utf-8", "replace")


def _usage_tokens(usage) -> int | None:
    if not isinstance(usage, dict):
        return None
    for key in ("output_tokens", "completion_tokens"):
        if isinstance(usage.get(key), int):
            return usage[key]
    return None


def _tokens_of(body: dict) -> int | None:
    tokens = _usage_tokens(body.get("usage"))
    if tokens is None and isinstance(body.get("segments"), list):  # verbose_json: tokens per segment
        tokens = sum(len(s.get("tokens") or []) for s in body["segments"])
    return tokens


async def _read_sse(response: httpx.Response, rec: Record, t0: float) -> None:
    """Fill text length, TTFT, tokens and ok/error from an SSE body."""
    text, done = "", False
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            continue
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            rec.error = f"bad SSE data: {data[:100]}"
            return
        if "error" in event:  # the server's error envelope, sent as the last event
            rec.error = _error_message(data.encode())
            return
        delta = None
        if event.get("type") == "transcript.text.delta":
            delta = event.get("delta") or ""
        elif event.get("choices"):
            delta = ((event["choices"][0] or {}).get("delta") or {}).get("content") or ""
        if delta:
            if rec.ttft_s is None:
                rec.ttft_s = time.perf_counter() - t0
            text += delta
        if event.get("type") == "transcript.text.done":
            done = True
            text = event.get("text", text)
        tokens = _usage_tokens(event.get("usage"))
        if tokens is not None:
            rec.output_tokens = tokens
    rec.chars = len(text)
    if done:
        rec.ok = True
    else:
        rec.error = "stream ended without transcript.text.done or [DONE]"


async def send(client: httpx.AsyncClient, clip: Clip, task: TaskSpec, model: str, *, stream: bool = False,
               response_format: str = "json", clock: float = 0.0, timeout_s: float = 60.0, **fields) -> Record:
    """Send one request and time it; never raises for HTTP or transport errors (they are recorded).

    ``clock`` is the run's time origin (``time.perf_counter()`` at its start); ``timeout_s`` bounds the
    whole request (httpx's own timeouts bound each read only); ``fields`` go into the Record.
    """
    rec = Record(model=model, task=task.label, clip=clip.id, audio_s=clip.seconds, **fields)
    path, data = request_form(task, model, stream=stream, response_format=response_format)
    files = {"file": (clip.filename, clip.audio, clip.mime)}
    t0 = time.perf_counter()
    rec.sent = t0 - clock
    try:
        async with asyncio.timeout(timeout_s):
            await _exchange(client, path, data, files, rec, t0, stream, response_format)
    except TimeoutError:
        rec.error = f"timeout: no complete answer within {timeout_s:g} s"
        rec.ok = False
    except httpx.HTTPError as exc:  # refused/reset connections, protocol errors
        rec.error = f"{type(exc).__name__}: {exc}"[:300]
        rec.ok = False
    except (ValueError, KeyError, AttributeError) as exc:  # a 200 whose body is not what the API promises
        rec.error = f"bad response body: {exc}"[:300]
        rec.ok = False
    t1 = time.perf_counter()
    rec.done = t1 - clock
    rec.latency_s = t1 - t0
    if stream and rec.ok and rec.ttft_s is None:
        rec.ttft_s = rec.latency_s  # nothing to stream (empty text): the first token is the answer
    return rec


async def _exchange(client, path, data, files, rec: Record, t0: float, stream: bool, response_format: str) -> None:
    """POST the form; fill status, ok, text length, tokens and TTFT into ``rec``."""
    if stream:
        async with client.stream("POST", path, data=data, files=files) as r:
            rec.status = r.status_code
            if r.status_code == 200:
                await _read_sse(r, rec, t0)
            else:
                rec.error = _error_message(await r.aread())
    else:
        r = await client.post(path, data=data, files=files)
        rec.status = r.status_code
        if r.status_code == 200:
            if response_format == "text":
                rec.chars = len(r.text)
            else:
                body = r.json()
                rec.chars = len(body.get("text", ""))
                rec.output_tokens = _tokens_of(body)
            rec.ok = True
        else:
            rec.error = _error_message(r.content)
