"""The real app in-process over HTTP, driven by the real ``openai`` client: every endpoint and format,
task routing, streaming, long audio, batching under concurrency, metrics, readiness."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.metrics import MODEL_METRICS, REQUEST_METRICS
from speechllm.audio import load_audio
from speechllm.tasks import Task

from .conftest import InProcessServer, Reference, long_clip, wav_bytes

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # openai marks translations
TASKS = {"transcriptions": Task("transcribe"), "translations": Task("translate", "fr")}
FORMATS = ["json", "text", "verbose_json", "srt", "vtt"]


@pytest.fixture(scope="module")
def server(make_server, model_pair) -> InProcessServer:
    return make_server(models=model_pair, max_batch_size=8, max_wait_ms=30)


@pytest.fixture(scope="module")
def ref(model_pair) -> Reference:
    return Reference(model_pair)


def _clock(text: str) -> list[str]:
    return re.findall(r"\d\d:\d\d:\d\d[.,]\d\d\d", text)


def test_health_ready_and_models(server, engine_name):
    assert server.get("/health").json() == {"status": "ok"}
    assert server.get("/ready").json() == {"status": "ready", "engine": engine_name, "models": ["pruned", "base"]}

    async def models():
        listed = await server.openai.models.list()
        one = await server.openai.models.retrieve("pruned")
        return listed, one

    listed, one = server.run(models)
    by_id = {m.id: m.model_dump() for m in listed.data}
    assert list(by_id) == ["pruned", "base"] and one.id == "pruned"
    pruned, base = by_id["pruned"], by_id["base"]
    assert (pruned["decoder_layers"], base["decoder_layers"]) == (2, 4)
    assert pruned["parameters"] < base["parameters"] and pruned["weight_bytes"] < base["weight_bytes"]
    assert pruned["provenance"] == {"parent": "base", "removed_layers": [1, 2], "kept_layers": [0, 3]}
    assert pruned["tasks"] == ["transcribe", "translate:fr", "translate:de"]
    assert pruned["max_audio_seconds"] == 10.0
    missing = server.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("endpoint", list(TASKS))
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_with_the_openai_client(server, ref, speech_bytes, endpoint, fmt):
    audio = speech_bytes[0]
    expected = ref.text("pruned", TASKS[endpoint], audio)
    duration = len(load_audio(audio)) / 16000

    async def call():
        api = getattr(server.openai.audio, endpoint)
        return await api.create(file=("clip.wav", audio), model="pruned", response_format=fmt)

    out = server.run(call)
    assert expected
    if fmt == "json":
        assert out.text == expected
    elif fmt == "text":
        assert out == expected
    elif fmt == "verbose_json":
        assert out.text == expected and abs(out.duration - duration) < 1e-3
        assert out.language == ("english" if endpoint == "transcriptions" else "french")
        [seg] = out.segments
        assert (seg.start, seg.text) == (0.0, expected) and abs(seg.end - duration) < 1e-3
        assert seg.avg_logprob < 0 and seg.tokens
    elif fmt == "srt":
        assert out.startswith("1\n00:00:00,000 --> ") and expected in out and len(_clock(out)) == 2
    else:
        assert out.startswith("WEBVTT\n\n00:00:00.000 --> ") and expected in out and len(_clock(out)) == 2


def test_task_routing_on_one_backbone(server, ref, speech_bytes):
    """transcribe / translate:fr / translate:de are prompts on one loaded model: each gets its own text."""
    audio = speech_bytes[1]

    async def calls():
        tr = await server.openai.audio.transcriptions.create(file=("a.wav", audio), model="base")
        default = await server.openai.audio.translations.create(file=("a.wav", audio), model="base")
        de = await server.openai.audio.translations.create(file=("a.wav", audio), model="base",
                                                           extra_body={"target_language": "de"})
        return tr.text, default.text, de.text

    got = server.run(calls)
    want = tuple(ref.text("base", t, audio) for t in (Task("transcribe"), Task("translate", "fr"),
                                                       Task("translate", "de")))
    assert got == want
    assert len(set(want)) == 3  # the prompts really differ
    # and the models differ: the pruned backbone answers with its own layers
    assert server.transcribe(audio, model="pruned").json()["text"] == ref.text("pruned", Task(), audio)


def test_streaming_transcription_with_the_openai_client(server, ref, speech_bytes):
    audio = speech_bytes[0]

    async def stream():
        events = await server.openai.audio.transcriptions.create(file=("a.wav", audio), model="base", stream=True)
        return [e async for e in events]

    events = server.run(stream)
    *deltas, done = events
    assert deltas and all(e.type == "transcript.text.delta" for e in deltas)
    assert done.type == "transcript.text.done"
    assert "".join(e.delta for e in deltas) == done.text == ref.text("base", Task(), audio)
    assert done.usage.output_tokens > 0 and done.usage.total_tokens > done.usage.output_tokens


def _sse(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def test_streaming_translation_sse(server, ref, speech_bytes):
    r = server.transcribe(speech_bytes[2], "translations", model="pruned", target_language="de", stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    *deltas, done = _sse(r.text)
    assert {e["type"] for e in deltas} == {"transcript.text.delta"} and done["type"] == "transcript.text.done"
    assert "".join(e["delta"] for e in deltas) == done["text"] == ref.text("pruned", Task("translate", "de"),
                                                                            speech_bytes[2])


def test_long_audio_is_split_with_timestamps(server, ref, speech_files):
    wav = long_clip(speech_files, 27.0)
    audio = wav_bytes(wav)
    expected = ref.text("base", Task(), audio)

    async def calls():
        api = server.openai.audio.transcriptions
        verbose = await api.create(file=("long.wav", audio), model="base", response_format="verbose_json",
                                   timestamp_granularities=["segment"])
        srt = await api.create(file=("long.wav", audio), model="base", response_format="srt")
        vtt = await api.create(file=("long.wav", audio), model="base", response_format="vtt")
        events = await api.create(file=("long.wav", audio), model="base", stream=True)
        return verbose, srt, vtt, [e async for e in events]

    verbose, srt, vtt, events = server.run(calls)
    assert verbose.text == expected and abs(verbose.duration - 27.0) < 1e-3
    segs = verbose.segments  # one per sentence: the VAD cut at the pauses between them
    assert len(segs) >= 6 and segs[0].start >= 0.0 and segs[-1].end <= 27.0
    assert all(a.start < a.end <= b.start for a, b in zip(segs, segs[1:]))
    assert all(s.end - s.start <= 10.0 for s in segs)
    assert " ".join(s.text for s in segs) == expected
    assert len(_clock(srt)) == 2 * len(segs) and len(_clock(vtt)) == 2 * len(segs)
    *deltas, done = events
    assert "".join(e.delta for e in deltas) == done.text == expected


def test_concurrent_requests_form_batches_and_match_one_by_one(server, ref, speech_bytes, noise_wavs):
    clips = list(speech_bytes) + [wav_bytes(w) for w in noise_wavs]
    jobs = [("pruned" if i % 2 else "base", ["transcriptions", "translations"][i // 2 % 2], clips[i % len(clips)])
            for i in range(32)]

    def batch_counts():
        fams = {f.name: f for f in text_string_to_metric_families(server.get("/metrics").text)}
        out = {}
        for s in fams["slimspeech_batch_size"].samples:
            key = s.labels.get("le")
            if s.name.endswith("_bucket") and key in ("1.0", "+Inf"):
                out[key] = out.get(key, 0) + s.value
        return out.get("+Inf", 0) - out.get("1.0", 0)  # clips that ran in a batch of 2 or more

    before = batch_counts()

    async def burst():
        async def one(model, endpoint, audio):
            return (await getattr(server.openai.audio, endpoint).create(file=("c.wav", audio), model=model)).text

        return await asyncio.gather(*(one(*job) for job in jobs))

    texts = server.run(burst)
    assert texts == [ref.text(m, TASKS[e], a) for m, e, a in jobs]
    assert batch_counts() - before >= 16  # most of the 32 ran batched


def test_metrics_parse_and_cover_every_metric_per_model(server, speech_bytes, engine_name):
    for model in ("pruned", "base"):  # at least one request per model
        assert server.transcribe(speech_bytes[2], model=model).status_code == 200
    r = server.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in REQUEST_METRICS + MODEL_METRICS:
        assert name in fams, name
        for model in ("pruned", "base"):
            samples = [s for s in fams[name].samples if s.labels.get("model") == model]
            assert samples, (name, model)
            if name in REQUEST_METRICS:
                assert {s.labels["task"] for s in samples} >= {"transcribe", "translate_fr", "translate_de"}
    value = {(s.name, s.labels.get("model")): s.value for f in fams.values() for s in f.samples}
    assert value[("slimspeech_decoder_layers", "pruned")] == 2 and value[("slimspeech_decoder_layers", "base")] == 4
    assert value[("slimspeech_weight_bytes", "pruned")] < value[("slimspeech_weight_bytes", "base")]
    assert value[("slimspeech_memory_rss_bytes", None)] > 10e6
    assert value[("slimspeech_ready", None)] == 1
    ok = [s for s in fams["slimspeech_requests"].samples
          if s.labels.get("model") == "base" and s.labels.get("status") == "200" and s.name.endswith("_total")]
    assert sum(s.value for s in ok) >= 1
    counts = {s.labels["model"]: s.value for s in fams["slimspeech_time_to_first_token_seconds"].samples
              if s.name.endswith("_count") and s.labels["task"] == "transcribe"}
    assert counts["pruned"] >= 1 and counts["base"] >= 1
    rtf = [s for s in fams["slimspeech_real_time_factor"].samples if s.name.endswith("_sum") and s.value > 0]
    assert rtf
    engine_figures = [f"slimspeech_{n}" for n in ("engine_running_requests", "engine_waiting_requests",
                                                  "kv_cache_usage_ratio")]
    if engine_name == "vllm":  # vLLM's scheduler figures, per model
        for name in engine_figures:
            assert {s.labels["model"] for s in fams[name].samples} == {"pruned", "base"}, name
        assert all(0 <= s.value <= 1 for s in fams["slimspeech_kv_cache_usage_ratio"].samples)
    else:
        assert not set(engine_figures) & set(fams)


def test_ready_is_503_until_models_are_warm(model_pair, speech_bytes):
    from server.settings import Settings

    gate = {}

    def hold(app):
        engine = app.state.engine
        start = engine.start

        async def slow_start():
            gate["event"] = asyncio.Event()
            await gate["event"].wait()
            await start()

        engine.start = slow_start

    server = InProcessServer(Settings(models=model_pair), wait=False, before_start=hold)  # lifecycle: torch only
    try:
        r = server.get("/ready")
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        assert server.get("/health").status_code == 200
        early = server.transcribe(speech_bytes[0], model="base")
        assert early.status_code == 503 and early.json()["error"]["code"] == "not_ready"
        server.run(lambda: _set(gate["event"]))
        server.wait_ready()
        assert server.transcribe(speech_bytes[0], model="base").status_code == 200
    finally:
        server.close()


async def _set(event):
    event.set()


def test_load_failure_is_reported_by_health_ready_and_v1(model_pair, tmp_path, speech_bytes):
    """A truncated weight file: every endpoint says 503 model_load_failed, naming the model and the file
    (relative to its dir: no machine path), at once rather than 'still loading, retry'."""
    import shutil

    from server.settings import Settings

    broken = tmp_path / "broken"
    shutil.copytree(model_pair["base"], broken)
    weights = broken / "decoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    server = InProcessServer(Settings(models={"broken": str(broken)}), wait=False)
    try:
        for _ in range(200):
            r = server.get("/health")
            if r.status_code == 503:
                break
            server.run(asyncio.sleep, 0.05)
        answers = [r, server.get("/ready"), server.get("/v1/models"),
                   server.transcribe(speech_bytes[0], model="broken")]
        for a in answers:
            assert a.status_code == 503, a.text
            err = a.json()["error"]
            assert err["code"] == "model_load_failed"
            assert "'broken'" in err["message"] and "decoder/model.safetensors" in err["message"]
            assert str(tmp_path) not in err["message"]
    finally:
        server.close()
