"""The load test's pieces without a server: statistics, ratios, the plan's windows, the workload, SSE parsing."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from loadtests import stats
from loadtests.client import send
from loadtests.errors import LoadTestError
from loadtests.run import Level, Plan, _numbers
from loadtests.workload import Clip, TaskSpec, Workload, load_clips, parse_tasks, request_form


def test_percentile_matches_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 101):
        xs = list(rng.exponential(size=n))
        for q in (0, 50, 90, 99, 100):
            assert stats.percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))
    assert stats.percentile([], 50) is None
    assert stats.distribution([]) is None


def _rec(model="a", ok=True, latency=0.1, ttft=None, tokens=5, audio=2.0, status=200, scheduled=None, sent=0.0,
         chars=10):
    return {"model": model, "ok": ok, "latency_s": latency, "ttft_s": ttft, "output_tokens": tokens,
            "audio_s": audio, "status": status, "scheduled": scheduled, "sent": sent, "chars": chars,
            "error": None if ok else f"HTTP {status}"}


def test_summarize_counts_only_successes_in_latency_and_throughput():
    recs = [_rec(latency=x / 10, ttft=x / 20) for x in range(1, 9)]
    recs += [_rec(ok=False, status=429, latency=9.0), _rec(ok=False, status=0, latency=60.0)]
    s = stats.summarize(recs, busy_s=4.0)
    assert (s["requests"], s["ok"], s["errors"]) == (10, 8, 2)
    assert s["error_rate"] == pytest.approx(0.2)
    assert s["statuses"] == {"0": 1, "200": 8, "429": 1}
    assert s["latency_s"]["max"] == pytest.approx(0.8)  # failed requests' 9 s and 60 s are not latencies
    assert s["latency_s"]["p50"] == pytest.approx(np.percentile([x / 10 for x in range(1, 9)], 50))
    assert s["ttft_s"]["p50"] == pytest.approx(s["latency_s"]["p50"] / 2)
    assert s["throughput_rps"] == pytest.approx(8 / 4.0)
    assert s["tokens_per_s"] == pytest.approx(40 / 4.0)
    assert s["rtfx"] == pytest.approx(16.0 / 4.0)
    assert s["first_errors"] == ["HTTP 0", "HTTP 429"]


def test_summarize_edge_cases():
    s = stats.summarize([_rec(tokens=None), _rec()], busy_s=1.0)
    assert s["tokens_per_s"] is None and s["output_tokens"] is None  # unknown for some: not a wrong number
    s = stats.summarize([_rec(ok=False, status=400)], busy_s=1.0)
    assert s["latency_s"] is None and s["throughput_rps"] == 0 and s["error_rate"] == 1.0
    s = stats.summarize([], busy_s=0.0)
    assert s["requests"] == 0 and s["error_rate"] is None and s["throughput_rps"] is None
    s = stats.summarize([_rec(scheduled=1.0, sent=1.25), _rec(scheduled=2.0, sent=2.5)], busy_s=1.0)
    assert s["max_send_lag_s"] == pytest.approx(0.5)


def test_ratios_and_ideal():
    a = stats.summarize([_rec(latency=0.05, ttft=0.02)] * 4, busy_s=1.0)
    b = stats.summarize([_rec(latency=0.10, ttft=0.04)] * 2, busy_s=1.0)
    r = stats.ratios({"pruned": a, "base": b}, "base")
    assert set(r) == {"pruned"}
    assert r["pruned"]["latency_p50"] == pytest.approx(0.5)
    assert r["pruned"]["ttft_p50"] == pytest.approx(0.5)
    assert r["pruned"]["throughput_rps"] == pytest.approx(2.0)
    ideal = stats.ideal_ratios({"pruned": 2, "base": 4}, "base")
    assert ideal["pruned"]["latency_p99"] == 0.5 and ideal["pruned"]["throughput_rps"] == 2.0
    assert ideal["pruned"]["decoder_layers"] == "2/4"
    b_failed = stats.summarize([_rec(ok=False, status=500)], busy_s=1.0)
    assert stats.ratios({"pruned": a, "base": b_failed}, "base")["pruned"]["latency_p50"] is None


def test_plan_interleaves_models_abba_and_bounds_time():
    plan = Plan(models=["pruned", "base"], levels=[Level("open", 2), Level("closed", 4)], duration_s=6,
                window_s=1.5, timeout_s=10, warmup=1)
    assert plan.windows() == [["pruned"], ["base"], ["base"], ["pruned"]] * 2
    assert plan.window_seconds() == pytest.approx(1.5)
    per_model = sum(plan.window_seconds() for w in plan.windows() if "pruned" in w)
    assert per_model == pytest.approx(plan.duration_s)
    assert plan.worst_case_s() == pytest.approx(2 * 8 * (1.5 + 10) + 2 * 1 * 10)
    concurrent = Plan(models=["pruned", "base"], levels=[Level("open", 2)], duration_s=5, mix="concurrent")
    assert concurrent.windows() == [["pruned", "base"]] and concurrent.window_seconds() == 5
    assert [Level("open", 0.5).name, Level("closed", 8).name] == ["rate=0.5", "concurrency=8"]


def test_flag_parsing():
    assert _numbers("1,2.5", "--rates") == [1.0, 2.5]
    assert _numbers("1,8", "--concurrency", integer=True) == [1, 8]
    for bad in ("1,x", "0", "-1"):
        with pytest.raises(LoadTestError, match="--rates"):
            _numbers(bad, "--rates")
    assert parse_tasks("transcribe, translate:fr,translate") == [
        TaskSpec("transcribe"), TaskSpec("translate", "fr"), TaskSpec("translate")]
    for bad in ("", "summarize", "transcribe:fr"):
        with pytest.raises(LoadTestError, match="--task"):
            parse_tasks(bad)
    path, form = request_form(TaskSpec("translate", "de"), "pruned", stream=True)
    assert path == "/v1/audio/translations"
    assert form == {"model": "pruned", "response_format": "json", "target_language": "de", "stream": "true"}


def test_workload_gives_every_model_the_same_sequence(tmp_path, speech_files):
    rows = [{"id": f"c{i}", "audio": f} for i, f in enumerate(speech_files)]  # no duration: read from the header
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    clips = load_clips(tmp_path / "m.jsonl", limit=2)
    assert [c.id for c in clips] == ["c0", "c1"] and clips[0].mime == "audio/wav"
    import soundfile as sf

    assert clips[0].seconds == pytest.approx(sf.info(speech_files[0]).duration)
    w = Workload(clips, parse_tasks("transcribe,translate:fr"))
    seq = [(c.id, t.label) for c, t in (w.item(j) for j in range(6))]
    assert seq == [("c0", "transcribe"), ("c0", "translate_fr"), ("c1", "transcribe"), ("c1", "translate_fr"),
                   ("c0", "transcribe"), ("c0", "translate_fr")]
    with pytest.raises(LoadTestError, match="not found"):
        load_clips(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": "x", "audio": "nope.wav"}\n')
    with pytest.raises(LoadTestError, match="line 1: audio file .*nope.wav not found"):
        load_clips(tmp_path / "bad.jsonl")


def _sse(events: list) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


@pytest.mark.parametrize("events, tokens", [
    # OpenAI's shape (what slimspeech serves)
    ([{"type": "transcript.text.delta", "delta": "he"}, {"type": "transcript.text.delta", "delta": "llo"},
      {"type": "transcript.text.done", "text": "hello", "usage": {"output_tokens": 3}}], 3),
    # vLLM's shape (its transcription server), so the load test can be pointed at one
    ([{"object": "transcription.chunk", "choices": [{"delta": {"content": "hel"}}]},
      {"object": "transcription.chunk", "choices": [{"delta": {"content": "lo"}}]},
      {"usage": {"prompt_tokens": 10, "completion_tokens": 4}}, b"[DONE]"], 4),
])
def test_stream_parser_reads_both_sse_shapes(events, tokens):
    def handler(request: httpx.Request) -> httpx.Response:
        assert b'name="stream"' in request.read()
        return httpx.Response(200, content=_sse(events), headers={"content-type": "text/event-stream"})

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x") as c:
            return await send(c, Clip("c", "a.wav", b"RIFF", 1.5), TaskSpec("transcribe"), "m", stream=True)

    rec = asyncio.run(go())
    assert rec.ok and rec.status == 200 and rec.chars == 5 and rec.output_tokens == tokens
    assert 0 < rec.ttft_s <= rec.latency_s


@pytest.mark.parametrize("status, body, stream, error", [
    (429, {"error": {"message": "queue full", "type": "rate_limit"}}, False, "queue full"),
    (400, {"error": {"message": "bad audio"}}, True, "bad audio"),
    (200, None, True, "stream ended without"),
])
def test_failures_are_recorded_not_raised(status, body, stream, error):
    def handler(request):
        if body is None:  # a stream cut before its last event
            return httpx.Response(200, content=_sse([{"type": "transcript.text.delta", "delta": "a"}]))
        return httpx.Response(status, json=body)

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x") as c:
            return await send(c, Clip("c", "a.wav", b"RIFF", 1.0), TaskSpec("transcribe"), "m", stream=stream)

    rec = asyncio.run(go())
    assert not rec.ok and rec.status == status and error in rec.error


def test_transport_errors_and_total_timeout():
    async def slow(request):
        await asyncio.sleep(5)
        return httpx.Response(200, json={"text": "late"})

    def refused(request):
        raise httpx.ConnectError("connection refused")

    async def go(handler, timeout):
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://x") as c:
            return await send(c, Clip("c", "a.wav", b"RIFF", 1.0), TaskSpec("transcribe"), "m", timeout_s=timeout)

    rec = asyncio.run(go(slow, 0.2))
    assert not rec.ok and rec.status == 0 and rec.error.startswith("timeout") and rec.latency_s < 2
    rec = asyncio.run(go(refused, 5))
    assert not rec.ok and rec.status == 0 and "ConnectError" in rec.error

