"""Browser recordings over HTTP on the real app with the demo models: webm/opus, ogg/opus, m4a/aac and
mp3 versions of one espeak-ng clip give the text of its wav, from both the pruned and the base model;
a broken file of each container is a 400 in OpenAI's envelope; the header budget holds for them."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import BROWSER_FORMATS, encode_audio, espeak_wav, require_tools

from .conftest import InProcessServer

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")

FORMATS = list(BROWSER_FORMATS)
MIME = {"webm": "audio/webm;codecs=opus", "ogg": "audio/ogg;codecs=opus", "m4a": "audio/mp4", "mp3": "audio/mpeg"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, bytes]:
    """{"wav": the espeak-ng clip, kind: the same clip encoded by PyAV}."""
    require_tools("espeak-ng", "sox", fix="apt-get install espeak-ng sox; scripts/setup.sh does")
    path = espeak_wav("three cats sleep in the small garden", tmp_path_factory.mktemp("browser") / "c.wav")
    samples = sf.read(path, dtype="float32")[0]
    return {"wav": open(path, "rb").read(), **{k: encode_audio(samples, 16000, k) for k in FORMATS}}


@pytest.fixture(scope="module")
def server():
    from server.settings import Settings

    srv = InProcessServer(Settings(engine="torch", max_wait_ms=20, max_audio_seconds=30))  # demo + demo-pruned
    yield srv
    srv.close()


def _post(server, kind: str, data: bytes, **fields):
    return server.post("/v1/audio/transcriptions", data=fields,
                       files={"file": (f"recording.{kind}", data, MIME.get(kind, "audio/wav"))})


@pytest.mark.parametrize("model", ["demo-pruned", "demo"])
def test_each_browser_format_gives_the_text_of_its_wav(server, clips, model):
    got = {}
    for kind, data in clips.items():
        r = _post(server, kind, data, model=model, response_format="verbose_json")
        assert r.status_code == 200, r.text
        got[kind] = r.json()
    print(model, {k: v["text"] for k, v in got.items()})
    assert got["wav"]["text"].strip()
    for kind in FORMATS:
        assert got[kind]["text"] == got["wav"]["text"], (kind, got[kind]["text"], got["wav"]["text"])
        assert abs(got[kind]["duration"] - got["wav"]["duration"]) < 0.08


@pytest.mark.parametrize("kind", FORMATS)
def test_a_broken_file_of_each_container_is_a_400(server, clips, kind):
    data = clips[kind]
    for broken in (data[:200], data[:16] + np.random.default_rng(2).bytes(4000)):
        r = _post(server, kind, broken, model="demo-pruned")
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "file" and err["code"] == "invalid_audio" and err["type"] == "invalid_request_error"
        assert "recording." + kind in err["message"], err


def test_over_long_browser_audio_is_refused_from_its_metadata(server, clips):
    """31 s of webm/opus against --max-audio-seconds 30: a 400 naming the length, before decoding."""
    samples = sf.read(io.BytesIO(clips["wav"]), dtype="float32")[0]
    long = np.tile(samples, int(np.ceil(31 * 16000 / samples.size)))[: 31 * 16000]
    r = _post(server, "webm", encode_audio(long, 16000, "webm"), model="demo-pruned")
    assert r.status_code == 400 and "31.0 s long, over the 30 s limit" in r.json()["error"]["message"], r.text
