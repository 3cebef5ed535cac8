"""Reliability under bad and heavy input, over HTTP on the real app: one bad clip never touches another
request, every upload has a bounded cost decided from its header, admission happens before the body
is read, long audio is cut at pauses, and the OpenAPI document tells the truth."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import time

import numpy as np
import pytest
import soundfile as sf

from .conftest import InProcessServer, PeakRss, long_clip, wav_bytes

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")


def _odd_rate_wav(rate: int) -> bytes:
    """A 3 KB WAV whose header declares ``rate`` Hz (what a hostile client can send)."""
    data = bytearray(wav_bytes(np.zeros(1500, dtype=np.float32)))
    data[24:28] = struct.pack("<I", rate)
    data[28:32] = struct.pack("<I", min(rate * 2, 2**32 - 1))
    return bytes(data)


def _silent_flac(seconds: float, rate: int, channels: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((int(seconds * rate), channels), dtype=np.int16), rate, format="FLAC")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(make_server, model_pair) -> InProcessServer:
    return make_server(models=model_pair, max_batch_size=8, max_wait_ms=300)


def _post_all(server: InProcessServer, clips: list[bytes], **fields):
    """Post every clip at once (one batch when they fit), -> responses in order."""
    async def go():
        async def one(audio):
            return await server.http.post("/v1/audio/transcriptions", data={"model": "base", **fields},
                                          files={"file": ("c.wav", audio, "audio/wav")})
        return await asyncio.gather(*(one(c) for c in clips))

    return server.run(go)


# ---- 1. a tiny clip in a full batch -------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True])
def test_a_tiny_clip_never_fails_its_batch_mates(server, speech_bytes, noise_wavs, stream):
    good = (list(speech_bytes) + [wav_bytes(w) for w in noise_wavs]) * 2
    good = good[:7]
    alone = [server.transcribe(c, model="base").json()["text"] for c in good]
    tiny = wav_bytes(np.random.default_rng(3).standard_normal(100).astype(np.float32) * 0.1)
    clips = good[:3] + [tiny] + good[3:]
    responses = _post_all(server, clips, stream=str(stream).lower())
    t = responses.pop(3)
    assert t.status_code in (200, 400), t.text
    for r, text in zip(responses, alone):
        assert r.status_code == 200, r.text
        if stream:
            events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
            assert events[-1]["type"] == "transcript.text.done", events
            assert events[-1]["text"] == text
        else:
            assert r.json()["text"] == text
    assert server.transcribe(good[0], model="base").json()["text"] == alone[0]


# ---- 2. uploads whose cost the header gives away --------------------------------------------------

@pytest.mark.parametrize("case", ["rate_999983", "rate_2e31", "flac_96k_stereo_599s"])
def test_costly_uploads_are_refused_from_the_header(server, speech_bytes, case):
    audio = {"rate_999983": lambda: _odd_rate_wav(999_983), "rate_2e31": lambda: _odd_rate_wav(2**31 - 1),
             "flac_96k_stereo_599s": lambda: _silent_flac(599, 96_000, 2)}[case]()
    assert len(audio) < 400_000
    with PeakRss() as rss:
        t = time.perf_counter()
        r = server.transcribe(audio, model="base")
        took = time.perf_counter() - t
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "file" and err["code"] == "invalid_audio"
    assert ("sample rate" in err["message"]) if case.startswith("rate") else ("samples" in err["message"])
    print(f"{case}: {took:.3f} s, RSS growth {rss.growth / 2**20:.0f} MB")
    assert took < 2.0 and rss.growth < 300 * 2**20
    assert server.transcribe(speech_bytes[0], model="base").status_code == 200


def test_huge_finite_samples_do_not_slow_or_break_anyone(server, speech_bytes):
    loud = np.full(16000, 1e30, dtype=np.float32)
    loud[::2] = -1e30
    buf = io.BytesIO()
    sf.write(buf, loud, 16000, format="WAV", subtype="FLOAT")
    r = server.transcribe(buf.getvalue(), model="base")
    assert r.status_code in (200, 400), r.text
    assert server.transcribe(speech_bytes[0], model="base").status_code == 200


# ---- 4. long audio by voice activity ---------------------------------------------------------------

def test_silence_gives_empty_text_and_no_speech(server):
    silence = wav_bytes(np.zeros(60 * 16000, dtype=np.float32))
    r = server.transcribe(silence, model="base", response_format="verbose_json")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "" and body["segments"] == [] and abs(body["duration"] - 60.0) < 1e-3


def test_long_speech_is_cut_at_pauses_with_no_speech_prob(server, speech_files):
    wav = long_clip(speech_files, 40.0)  # sentences with 0.5 s pauses
    r = server.transcribe(wav_bytes(wav), model="base", response_format="verbose_json")
    assert r.status_code == 200, r.text
    segs = r.json()["segments"]
    assert len(segs) >= 8
    assert all(0 <= a["start"] < a["end"] <= b["start"] for a, b in zip(segs, segs[1:]))
    assert all(s["end"] - s["start"] < 6.0 for s in segs)  # one sentence each, not a full window
    assert all(0.0 <= s["no_speech_prob"] < 0.5 for s in segs)


def test_chunking_strategy_field(server, speech_bytes):
    ok = server.transcribe(speech_bytes[0], model="base", chunking_strategy="auto")
    assert ok.status_code == 200 and ok.json()["text"]
    vad = json.dumps({"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 300})
    assert server.transcribe(speech_bytes[0], model="base", chunking_strategy=vad).status_code == 200
    for bad in ("sometimes", json.dumps({"type": "server_vad", "threshold": 7}), json.dumps({"type": "x"})):
        r = server.transcribe(speech_bytes[0], model="base", chunking_strategy=bad)
        assert r.status_code == 400 and r.json()["error"]["param"] == "chunking_strategy", r.text


# ---- 5. admission counts requests, before the body -----------------------------------------------

def test_a_long_request_takes_one_slot(make_server, model_pair, speech_files):
    """(The storms, measured on a server process's own memory, are in test_storm.py.)"""
    server = make_server(models=model_pair, max_queue=2)
    wav = long_clip(speech_files, 120.0)
    r = server.transcribe(wav_bytes(wav), model="base", response_format="verbose_json")
    assert r.status_code == 200, r.text
    assert len(r.json()["segments"]) > 2  # many chunks, one slot


# ---- 7-9. the contract ------------------------------------------------------------------------------

def test_openapi_documents_what_is_sent(server):
    doc = server.get("/openapi.json").json()
    for path in ("/v1/audio/transcriptions", "/v1/audio/translations"):
        responses = doc["paths"][path]["post"]["responses"]
        assert "422" not in responses
        assert {"200", "400", "401", "404", "413", "429", "503"} <= set(responses)
        assert responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
        assert {"application/json", "text/plain", "text/event-stream"} <= set(responses["200"]["content"])
    assert "text/plain" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_models_expose_no_machine_paths(make_server, model_pair, tmp_path):
    import shutil

    from speechllm.modeldir import PROVENANCE_FILE, read_provenance, write_json

    model = tmp_path / "with-paths"
    shutil.copytree(model_pair["base"], model)
    write_json(model / PROVENANCE_FILE, {**read_provenance(model), "parent": str(tmp_path / "runs" / "parent"),
                                         "data": [str(tmp_path / "train.jsonl")]})
    server = make_server(models={"m": str(model)})
    text = server.get("/v1/models").text
    assert str(tmp_path) not in text and "/runs/" not in text
    assert server.get("/v1/models/m").json()["provenance"]["parent"] == "parent"


def test_translation_fields(server, speech_bytes):
    de = server.transcribe(speech_bytes[0], "translations", model="base", target_language="de").json()["text"]
    fr = server.transcribe(speech_bytes[0], "translations", model="base", target_language="fr").json()["text"]
    assert de != fr
    assert server.transcribe(speech_bytes[0], "translations", model="base", to_language="de").json()["text"] == de
    clash = server.transcribe(speech_bytes[0], "translations", model="base", to_language="de", target_language="fr")
    assert clash.status_code == 400 and clash.json()["error"]["param"] == "to_language"
    for field in ("target_language", "to_language"):
        r = server.transcribe(speech_bytes[0], model="base", **{field: "de"})
        assert r.status_code == 400 and r.json()["error"]["param"] == field and "/translations" in r.text
    r = server.transcribe(speech_bytes[0], model="base", **{"include[]": "logprobs"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "include"


def test_cors_is_off_by_default_and_on_when_asked(server, make_server, model_pair):
    headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in server.request("OPTIONS", "/v1/models", headers=headers).headers
    cors = make_server(models=model_pair, cors_origins="https://app.example")
    r = cors.request("OPTIONS", "/v1/audio/transcriptions", headers=headers)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
