"""Long audio on the demo model over HTTP: a 3-minute recording of 60 benchmark sentences with
pauses is transcribed about as well as the same sentences one by one (the VAD cuts it into
utterances like those the model was trained on); a minute of silence comes back empty."""

from __future__ import annotations

import random

import numpy as np
import pytest

from prune_tools.data.grammar import Grammar
from prune_tools.data.synth import TRAIN_VOICES, synthesize
from speechllm.audio import load_audio
from speechllm.generate import transcribe
from speechllm.modeldir import load_model
from speechllm.scoring import wer

from .conftest import InProcessServer, wav_bytes

pytestmark = [pytest.mark.slow,  # the demo model on synthesized speech
              pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")]
N = 60  # benchmark sentences are ~2.2 s: 60 with pauses make the 3 minutes the issue asks for


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """(sentences, their clips, the 3-minute recording: the clips with 0.4-1.0 s pauses between them)."""
    rng = random.Random(20261202)
    grammar, d = Grammar(), tmp_path_factory.mktemp("long")
    sents, clips, parts = [], [], []
    for i in range(N):
        s = grammar.sample(rng)
        synthesize(s.en, rng.choice(TRAIN_VOICES), rng.randint(140, 180), rng.randint(35, 65), d / f"{i}.flac")
        clip = load_audio(d / f"{i}.flac")
        sents.append(s.en)
        clips.append(clip)
        parts += [clip, np.zeros(int(rng.uniform(0.4, 1.0) * 16000), dtype=np.float32)]
    return sents, clips, np.concatenate(parts)


@pytest.fixture(scope="module")
def server():
    from server.settings import Settings

    srv = InProcessServer(Settings(engine="torch", max_batch_size=8, max_wait_ms=20))  # demo + demo-pruned
    yield srv
    srv.close()


def test_a_long_recording_reads_like_its_sentences(server, recording):
    sents, clips, long = recording
    assert 150 <= len(long) / 16000 <= 240
    one_by_one = wer(sents, transcribe(load_model(), clips))
    r = server.transcribe(wav_bytes(long), model="demo", response_format="verbose_json")
    assert r.status_code == 200, r.text
    body = r.json()
    long_wer = wer([" ".join(sents)], [body["text"]])
    print(f"demo: WER one by one {one_by_one:.2f}%, as one {len(long) / 16000:.0f} s recording {long_wer:.2f}% "
          f"({len(body['segments'])} segments)")
    assert long_wer <= 1.5 * one_by_one + 1.0
    assert len(body["segments"]) >= N * 0.8


def test_a_minute_of_silence_is_empty(server):
    r = server.transcribe(wav_bytes(np.zeros(60 * 16000, dtype=np.float32)), model="demo")
    assert r.status_code == 200 and r.json()["text"] == ""
