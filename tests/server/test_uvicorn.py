"""Once through a real server process: ``slimspeech serve`` (uvicorn) on 127.0.0.1, driven by the
real ``openai`` client; then client disconnects and a graceful shutdown under load."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import openai
import pytest

from speechllm.tasks import Task

from .conftest import VLLM_TEST_SETTINGS, Reference, ServerProcess, long_clip, wav_bytes

pytestmark = [pytest.mark.slow,  # server processes over sockets
              pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")]
FORMATS = ["json", "text", "verbose_json", "srt", "vtt"]


@pytest.fixture(scope="module")
def live(model_pair, engine_name):
    extra = ["--engine", engine_name]
    if engine_name == "vllm":
        extra += ["--vllm-args", json.dumps(VLLM_TEST_SETTINGS["vllm_args"])]
    server = ServerProcess(model_pair, "--max-batch-size", "8", "--max-wait-ms", "20", *extra)
    yield server
    server.stop()
    server.log.close()


@pytest.fixture(scope="module")
def ref(model_pair) -> Reference:
    return Reference(model_pair)


@pytest.fixture(scope="module")
def client(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_openai_client_every_format_over_a_real_socket(live, client, ref, speech_bytes):
    # a clip the random tiny model answers with some text for both tasks (segments are non-empty)
    audio = next(a for a in speech_bytes if ref.text("base", Task(), a) and ref.text("base", Task("translate", "fr"), a))
    for endpoint, task in (("transcriptions", Task()), ("translations", Task("translate", "fr"))):
        api = getattr(client.audio, endpoint)
        expected = ref.text("base", task, audio)
        out = {fmt: api.create(file=("clip.wav", audio), model="base", response_format=fmt) for fmt in FORMATS}
        assert out["json"].text == expected and out["text"] == expected and out["verbose_json"].text == expected
        assert out["verbose_json"].segments[0].text == expected
        assert out["srt"].startswith("1\n00:00:00,000 --> 00:00:0") and expected in out["srt"]
        assert out["vtt"].startswith("WEBVTT\n\n00:00:00.000 --> 00:00:0") and expected in out["vtt"]
    de = client.audio.translations.create(file=("clip.wav", audio), model="pruned",
                                          extra_body={"target_language": "de"})
    assert de.text == ref.text("pruned", Task("translate", "de"), audio)
    assert [m.id for m in client.models.list().data] == ["pruned", "base"]
    with pytest.raises(openai.NotFoundError) as e:
        client.audio.transcriptions.create(file=("clip.wav", audio), model="whisper-1")
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(file=("clip.wav", b"not audio"), model="base")
    assert e.value.body["param"] == "file"


def test_streaming_over_a_real_socket(live, client, ref, speech_bytes):
    audio = speech_bytes[1]
    *deltas, done = list(client.audio.transcriptions.create(file=("a.wav", audio), model="pruned", stream=True))
    assert deltas and "".join(e.delta for e in deltas) == done.text == ref.text("pruned", Task(), audio)
    # translations (the openai client has no stream flag there): raw SSE, arriving event by event
    with httpx.stream("POST", f"{live.url}/v1/audio/translations", timeout=60,
                      files={"file": ("a.wav", audio)}, data={"model": "base", "stream": "true"}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "transcript.text.done"
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["text"] == ref.text(
        "base", Task("translate", "fr"), audio)


def test_client_disconnect_cancels(live, client, speech_files, speech_bytes):
    audio = wav_bytes(long_clip(speech_files, 400.0))  # 40+ chunks: seconds of work
    before = live.status_count("base", "499")
    # streaming: hang up after the first delta
    with httpx.stream("POST", f"{live.url}/v1/audio/transcriptions", timeout=60,
                      files={"file": ("long.wav", audio)}, data={"model": "base", "stream": "true"}) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                break
    # not streaming: give up waiting
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{live.url}/v1/audio/transcriptions", files={"file": ("long.wav", audio)},
                   data={"model": "base"}, timeout=httpx.Timeout(30, read=0.3))
    deadline = time.monotonic() + 30
    while live.status_count("base", "499") < before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live.status_count("base", "499") == before + 2
    # still serving
    assert client.audio.transcriptions.create(file=("a.wav", speech_bytes[0]), model="base").text


def test_graceful_shutdown_finishes_in_flight_requests(live, speech_files, ref):
    """Last in this module: it stops the module's server."""
    server = live
    audio = wav_bytes(long_clip(speech_files, 60.0))
    expected = ref.text("base", Task(), audio)
    results, finished = [None] * 6, [0.0] * 6

    def send(i):
        r = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("a.wav", audio)},
                       data={"model": "base"}, timeout=120)
        results[i], finished[i] = r, time.monotonic()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while server.metrics()["slimspeech_queue_depth"].samples[0].value == 0:  # requests are queued
            assert time.monotonic() < deadline and any(t.is_alive() for t in threads), "never saw a queue"
            time.sleep(0.01)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(120)
        assert server.proc.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    finally:
        server.stop()
    log = server.output()
    print(log)
    assert "Traceback" not in log, log
    assert [r.status_code for r in results] == [200] * 6
    assert all(r.json()["text"] == expected for r in results)
    assert max(finished) > signalled  # they really were in flight when the signal came
