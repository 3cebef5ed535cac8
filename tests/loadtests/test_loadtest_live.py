"""``slimspeech loadtest`` against a real server process for a few seconds: every statistic in its summary is
recomputed from its per-request records, and the server's own counters agree with the records."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from loadtests.run import main as loadtest
from speechllm import cli

from .live import free_port, metric_samples

pytestmark = pytest.mark.slow  # a server process over a socket


def _ok_counts(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in metric_samples(url).get("slimspeech_requests_total", []):
        if labels["status"] == "200":
            out[labels["model"]] = out.get(labels["model"], 0) + value
    return out


def _load(out):
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    return summary, records


def _check_summary_against_records(summary: dict, records: list[dict]) -> None:
    for lv in summary["levels"]:
        for model, s in lv["models"].items():
            recs = [r for r in records if r["level"] == lv["level"] and r["model"] == model and not r["warmup"]]
            good = [r for r in recs if r["ok"]]
            assert s["requests"] == len(recs) > 0
            assert s["ok"] == len(good) and s["errors"] == len(recs) - len(good)
            assert s["error_rate"] == pytest.approx((len(recs) - len(good)) / len(recs))
            assert sum(s["statuses"].values()) == len(recs)
            assert s["requests"] <= summary["plan"]["max_requests_per_level_per_model"]
            lat = [r["latency_s"] for r in good]
            for q in (50, 90, 99):
                assert s["latency_s"][f"p{q}"] == pytest.approx(float(np.percentile(lat, q)))
            d = s["latency_s"]
            assert d["min"] <= d["p50"] <= d["p90"] <= d["p99"] <= d["max"]
            assert s["throughput_rps"] == pytest.approx(len(good) / s["busy_s"])
            assert s["rtfx"] == pytest.approx(sum(r["audio_s"] for r in good) / s["busy_s"])
            if s["tokens_per_s"] is not None:
                assert s["tokens_per_s"] == pytest.approx(sum(r["output_tokens"] for r in good) / s["busy_s"])
            # busy time covers each window's requests, from the first sent to the last answered
            windows = {r["window"] for r in recs}
            spans = sum(max(r["done"] for r in recs if r["window"] == w) - min(r["sent"] for r in recs
                                                                             if r["window"] == w) for w in windows)
            assert spans - 1e-6 <= s["busy_s"]
        for model, r in lv["ratios"].items():
            ref = lv["models"][summary["reference"]]
            mine = lv["models"][model]
            assert r["latency_p50"] == pytest.approx(mine["latency_s"]["p50"] / ref["latency_s"]["p50"])
            assert r["latency_p99"] == pytest.approx(mine["latency_s"]["p99"] / ref["latency_s"]["p99"])
            assert r["throughput_rps"] == pytest.approx(mine["throughput_rps"] / ref["throughput_rps"])
            assert r["rtfx"] == pytest.approx(mine["rtfx"] / ref["rtfx"])


def test_open_and_closed_loop_streaming_alternating(live_server, bench_manifest, tmp_path):
    out = tmp_path / "lt"
    before = _ok_counts(live_server.url)
    t0 = time.monotonic()
    argv = ["--url", live_server.url, "--models", "pruned,base", "--data", str(bench_manifest),
            "--rates", "6", "--concurrency", "2", "--duration-s", "1.6", "--window-s", "0.8", "--stream",
            "--task", "transcribe,translate:fr", "--max-requests", "40", "--warmup", "1", "--out", str(out)]
    assert loadtest(argv) == 0
    elapsed = time.monotonic() - t0
    summary, records = _load(out)

    assert [lv["level"] for lv in summary["levels"]] == ["rate=6", "concurrency=2"]
    assert summary["reference"] == "base" and summary["plan"]["stream"]
    assert summary["server"]["models"]["pruned"]["decoder_layers"] == 2
    assert summary["server"]["models"]["base"]["decoder_layers"] == 4
    assert summary["ideal_ratios"]["pruned"]["latency_p50"] == 0.5
    assert summary["ideal_ratios"]["pruned"]["throughput_rps"] == 2.0
    assert all(r["ok"] and r["status"] == 200 for r in records), {r["error"] for r in records}
    assert sum(r["warmup"] for r in records) == summary["warmup_requests"] == 2
    _check_summary_against_records(summary, records)

    # streaming: time to first token exists and never exceeds the latency; usage gives the tokens
    assert all(0 < r["ttft_s"] <= r["latency_s"] for r in records)
    assert all(r["output_tokens"] is not None for r in records)
    # alternate mix: each window loads one model, A B B A, and windows do not overlap
    for level in ("rate=6", "concurrency=2"):
        wins = {}
        for r in records:
            if r["level"] == level:
                wins.setdefault(r["window"], set()).add(r["model"])
        assert all(len(m) == 1 for m in wins.values())
        order = [next(iter(wins[w])) for w in sorted(wins)]
        assert order == ["pruned", "base", "base", "pruned"][:len(order)]
    # open loop: requests go out on the Poisson schedule (the client kept up)
    lagged = [r["sent"] - r["scheduled"] for r in records if r["scheduled"] is not None]
    assert lagged and max(lagged) < 0.5
    # both models got the same clips and tasks in the same order
    seqs = {m: [(r["clip"], r["task"]) for r in sorted(records, key=lambda r: r["sent"]) if r["model"] == m]
            for m in ("pruned", "base")}
    n = min(map(len, seqs.values()))
    assert seqs["pruned"][:n] == seqs["base"][:n] and n >= 4
    assert {t for _, t in seqs["base"]} == {"transcribe", "translate_fr"}
    # the server counted exactly the requests the load generator says succeeded
    after = _ok_counts(live_server.url)
    for m in ("pruned", "base"):
        assert after[m] - before.get(m, 0) == sum(1 for r in records if r["model"] == m and r["ok"])
    # bounded: it stopped by itself, well within its worst case
    assert elapsed < 30
    # the report: markdown tables, plots
    md = (out / "report.md").read_text()
    assert "| rate=6 | pruned |" in md and "| concurrency=2 | base |" in md and "## pruned / base" in md
    assert "| ideal | 0.5 | 0.5 | 0.5 | 0.5 | 2 | 2 | 2 |" in md
    for name in ("latency_cdf.png", "load.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["plots"] == ["latency_cdf.png", "load.png"]


def test_concurrent_mix_not_streaming(live_server, bench_manifest, tmp_path):
    out = tmp_path / "lt"
    argv = ["--url", live_server.url, "--data", str(bench_manifest), "--mix", "concurrent",
            "--concurrency", "2", "--duration-s", "1.0", "--task", "translate:de",
            "--response-format", "verbose_json", "--warmup", "0", "--out", str(out)]
    assert loadtest(argv) == 0
    summary, records = _load(out)
    assert summary["plan"]["models"] == ["pruned", "base"]  # default: every served model
    _check_summary_against_records(summary, records)
    assert {r["window"] for r in records} == {0}
    assert {r["task"] for r in records} == {"translate_de"}
    assert all(r["ttft_s"] is None for r in records)  # no stream, no TTFT
    assert all(r["output_tokens"] is not None for r in records)  # verbose_json: tokens of the segments
    # concurrent: the two models' requests overlap in time
    spans = {m: (min(r["sent"] for r in records if r["model"] == m), max(r["done"] for r in records if r["model"] == m))
             for m in ("pruned", "base")}
    assert spans["pruned"][0] < spans["base"][1] and spans["base"][0] < spans["pruned"][1]


def test_failed_requests_are_counted(live_server, tmp_path):
    (tmp_path / "noise.wav").write_bytes(b"this is not audio")
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "bad", "audio": "noise.wav", "duration": 1.0}) + "\n")
    out = tmp_path / "lt"
    assert loadtest(["--url", live_server.url, "--models", "pruned", "--data", str(tmp_path / "m.jsonl"),
                     "--concurrency", "1", "--duration-s", "0.5", "--max-requests", "5", "--warmup", "0",
                     "--out", str(out)]) == 0
    summary, records = _load(out)
    s = summary["levels"][0]["models"]["pruned"]
    assert s["requests"] == len(records) == 5 and s["errors"] == 5 and s["error_rate"] == 1.0
    assert s["statuses"] == {"400": 5} and s["latency_s"] is None and s["throughput_rps"] == 0
    assert all(r["error"] and not r["ok"] for r in records)
    assert "## Errors" in (out / "report.md").read_text()


def test_cli_errors_are_one_line(live_server, bench_manifest, tmp_path, capsys):
    cases = [
        (["--models", "pruned,whisper-1"], "--models: whisper-1 not served"),
        (["--rates", "0"], "--rates '0': every value must be > 0"),
        (["--task", "summarize"], "--task 'summarize'"),
        (["--reference", "other"], "--reference 'other' is not one of --models"),
    ]
    for extra, message in cases:
        argv = ["loadtest", "--url", live_server.url, "--data", str(bench_manifest), "--out", str(tmp_path / "x"),
                "--duration-s", "0.2", *extra]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and message in err[-1], err
    dead = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["loadtest", "--url", dead, "--data", str(bench_manifest), "--out", str(tmp_path / "y"),
                     "--wait-s", "0.3"]) == 2
    assert "is not ready (ConnectError" in capsys.readouterr().err
    assert cli.main(["loadtest", "--url", live_server.url, "--data", str(tmp_path / "none.jsonl"),
                     "--out", str(tmp_path / "z")]) == 2
    assert "manifest" in capsys.readouterr().err


def test_vllm_bench_openai_audio_requests_are_served(live_server, speech_files):
    """The form ``vllm bench serve --backend openai-audio`` posts (flattened multipart, stream=True, its extra
    fields, an unnamed WAV part) is accepted and streamed in vLLM's chunk shape."""
    import io

    import soundfile as sf

    wav, sr = sf.read(speech_files[0])
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV")
    form = {"model": "pruned", "temperature": "0.0", "max_completion_tokens": "12", "stream": "True",
            "language": "en", "stream_include_usage": "True", "stream_continuous_usage_stats": "True"}
    with httpx.stream("POST", f"{live_server.url}/v1/audio/transcriptions", data=form,
                      files={"file": ("file", buf.getvalue(), "audio/wav")}, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        chunks = [line[5:].strip() for line in r.iter_lines() if line.startswith("data:")]
    assert chunks[-1] == "[DONE]" and json.loads(chunks[-2])["usage"]["completion_tokens"] > 0


def test_vllm_bench_client_sees_first_token(live_server, speech_files):
    """vLLM's stream fields get vLLM's chunk shape: choices[0].delta.content, usage, [DONE]."""
    def stream(**extra):
        with httpx.stream("POST", f"{live_server.url}/v1/audio/transcriptions", timeout=30,
                          data={"model": "pruned", "stream": "True", **extra},
                          files={"file": ("file", open(speech_files[1], "rb").read(), "audio/wav")}) as r:
            return [line[5:].strip() for line in r.iter_lines() if line.startswith("data:")]

    openai_shape = [json.loads(c) for c in stream()]
    assert openai_shape[-1]["type"] == "transcript.text.done"
    chunks = stream(stream_include_usage="True")
    assert chunks[-1] == "[DONE]"
    parsed = [json.loads(c) for c in chunks[:-1]]
    text = "".join(c["delta"].get("content", "") for p in parsed for c in p["choices"])
    assert text and text == openai_shape[-1]["text"]  # what vLLM's client reads the text and TTFT from
    assert parsed[-2]["choices"][0]["finish_reason"] == "stop"
    assert parsed[-1]["usage"]["completion_tokens"] == openai_shape[-1]["usage"]["output_tokens"] > 0
    assert all(p["object"] == "transcription.chunk" and p["model"] == "pruned" for p in parsed)
