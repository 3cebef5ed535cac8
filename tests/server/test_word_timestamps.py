"""Word timestamps over HTTP on the real app with the demo models (CTC projectors): verbose_json ``words``,
one srt/vtt cue per word, the 400s (no CTC head, translations, formats without words); and the issue's
acceptance on espeak-ng speech (slow tier): on 20 clips every word lies inside the clip and in order,
and on 20 clips of two sentences joined by a known 0.5-1.0 s silence the first sentence's last word
ends and the second's first word starts within 80 ms of the silence's edges (median)."""

from __future__ import annotations

import io
import random
import re

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import require_tools

from .conftest import InProcessServer, wav_bytes

pytestmark = pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
SR = 16000


@pytest.fixture(scope="module")
def server():
    from server.settings import Settings

    srv = InProcessServer(Settings(engine="torch", max_wait_ms=20))  # demo + demo-pruned: ctc_compress
    yield srv
    srv.close()


def _speech(text: str, path, voice="en-us", speed=160, pitch=50) -> np.ndarray:
    """espeak-ng speech (the benchmark's synthesizer) with its own leading and trailing silence cut off:
    from the first to the last sample above 1% of the peak."""
    from prune_tools.data.synth import synthesize

    synthesize(text, voice, speed, pitch, path)
    x = sf.read(str(path), dtype="float32")[0]
    loud = np.nonzero(np.abs(x) > 0.01 * np.abs(x).max())[0]
    return x[loud[0]:loud[-1] + 1]


def _words(server, audio: np.ndarray, model="demo-pruned", **fields):
    r = server.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav_bytes(audio), "audio/wav")},
                    data={"model": model, "response_format": "verbose_json", "timestamp_granularities[]": "word",
                          **fields})
    assert r.status_code == 200, r.text
    return r.json()


def _check_inside_and_ordered(body: dict, seconds: float) -> None:
    words = body["words"]
    assert [w["word"] for w in words] == body["text"].split(), body
    assert all(set(w) == {"word", "start", "end"} for w in words)
    assert all(0.0 <= w["start"] < w["end"] <= seconds + 1e-3 for w in words), (seconds, words)
    assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:])), words


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> np.ndarray:
    require_tools("espeak-ng", "sox", fix="apt-get install espeak-ng sox; scripts/setup.sh does")
    speech = _speech("the small dog sees the red ball", tmp_path_factory.mktemp("w") / "a.flac")
    pad = np.zeros(int(0.4 * SR), dtype=np.float32)
    return np.concatenate([pad, speech, pad])


@pytest.mark.parametrize("model", ["demo-pruned", "demo"])
def test_verbose_json_words(server, clip, model):
    body = _words(server, clip, model=model)
    print(body["text"], body["words"])
    _check_inside_and_ordered(body, len(clip) / SR)
    assert body["segments"] and body["text"]
    assert abs(body["words"][0]["start"] - 0.4) < 0.08  # the speech starts after 0.4 s of silence


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_word_level_srt_and_vtt(server, clip, fmt):
    words = _words(server, clip)["words"]
    r = server.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav_bytes(clip), "audio/wav")},
                    data={"model": "demo-pruned", "response_format": fmt, "timestamp_granularities[]": "word"})
    assert r.status_code == 200, r.text
    cues = re.findall(r"(\d\d):(\d\d):(\d\d)[,.](\d{3}) --> [\d:,.]+\n(\S+)\n", r.text)
    assert [c[4] for c in cues] == [w["word"] for w in words], r.text
    starts = [int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 for h, m, s, ms, _ in cues]
    assert starts == pytest.approx([w["start"] for w in words], abs=1e-3)
    assert r.text.startswith("WEBVTT" if fmt == "vtt" else "1\n")


@pytest.mark.parametrize("case,fields,endpoint,want", [
    ("json", {"response_format": "json"}, "transcriptions", "verbose_json (words), srt or vtt"),
    ("stream", {"response_format": "json", "stream": "true"}, "transcriptions", "not a stream"),
    ("translation", {"response_format": "verbose_json"}, "translations", "a translation's words are not"),
    ("unknown", {"response_format": "verbose_json", "timestamp_granularities[]": "letter"}, "transcriptions",
     "use segment or word"),
])
def test_what_cannot_have_word_timestamps_is_a_400(server, clip, case, fields, endpoint, want):
    data = {"model": "demo-pruned", "timestamp_granularities[]": "word", **fields}
    r = server.post(f"/v1/audio/{endpoint}", files={"file": ("a.wav", wav_bytes(clip), "audio/wav")}, data=data)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "timestamp_granularities" and want in err["message"], err


def test_a_model_without_ctc_head_says_why(tmp_path_factory, clip):
    from server.settings import Settings
    from speechllm.builders import tiny_slam

    path = tmp_path_factory.mktemp("mlp") / "mlp"
    tiny_slam("llama", projector="stack_mlp").save(path, provenance={"built_by": "tests"})
    srv = InProcessServer(Settings(engine="torch", models={"mlp": str(path)}))
    try:
        r = srv.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav_bytes(clip), "audio/wav")},
                     data={"model": "mlp", "response_format": "verbose_json", "timestamp_granularities[]": "word"})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "timestamp_granularities" and err["code"] == "unsupported_value"
        assert "'mlp' gives no word timestamps: it has no CTC head (projector kind stack_mlp)" in err["message"]
        segments = srv.post("/v1/audio/transcriptions", files={"file": ("a.wav", wav_bytes(clip), "audio/wav")},
                            data={"model": "mlp", "response_format": "verbose_json",
                                  "timestamp_granularities[]": "segment"})
        assert segments.status_code == 200 and "words" not in segments.json()
    finally:
        srv.close()


def test_long_audio_words_come_from_every_chunk_on_one_timeline(server, tmp_path):
    """Over the demo model's 16 s window: the VAD cuts it at pauses and each piece's words are shifted to
    the upload's timeline; together they are the joined text's words, in order."""
    require_tools("espeak-ng", "sox", fix="apt-get install espeak-ng sox; scripts/setup.sh does")
    sentences = ["the small dog sees the red ball", "three cats sleep in the garden",
                 "my brother will not eat the green apple", "a teacher reads the long letter",
                 "the old farmer walked to the river", "her friends will visit the castle"]
    pause = np.zeros(int(0.7 * SR), np.float32)
    parts, onsets = [pause], []
    for i, text in enumerate(sentences):
        onsets.append(sum(len(p) for p in parts) / SR)
        parts += [_speech(text, tmp_path / f"{i}.flac"), pause]
    audio = np.concatenate(parts * 2)  # about 30 s
    onsets += [o + len(np.concatenate(parts)) / SR for o in onsets]
    body = _words(server, audio)
    assert len(audio) / SR > 20 and len(body["segments"]) >= 2
    _check_inside_and_ordered(body, len(audio) / SR)
    # each sentence's onset has a word starting there
    gaps = [min(abs(o - w["start"]) for w in body["words"]) for o in onsets]
    print("onset to nearest word start (s):", [round(g, 3) for g in gaps])
    assert np.median(gaps) <= 0.08 and max(gaps) <= 0.25, gaps


# ---- the acceptance --------------------------------------------------------------------------

N = 20


@pytest.mark.slow  # 40 clips synthesized and transcribed by the demo model (about a minute here)
def test_acceptance_on_the_demo_model(server, tmp_path):
    from prune_tools.data.grammar import Grammar
    from prune_tools.data.synth import TRAIN_VOICES

    rng = random.Random(20261202)
    grammar = Grammar()

    def voice():
        return dict(voice=rng.choice(TRAIN_VOICES), speed=rng.randint(140, 180), pitch=rng.randint(35, 65))

    # 1. 20 clips: every word inside the clip, in order
    for i in range(N):
        speech = _speech(grammar.sample(rng).en, tmp_path / f"c{i}.flac", **voice())
        audio = np.concatenate([np.zeros(int(rng.uniform(0.1, 0.6) * SR), np.float32), speech,
                                np.zeros(int(rng.uniform(0.1, 0.6) * SR), np.float32)])
        _check_inside_and_ordered(_words(server, audio), len(audio) / SR)

    # 2. 20 clips of two sentences and a known 0.5-1.0 s silence between them. The demo model was trained
    # on single sentences and stops after the first of two (measured: 12 of 12 lost the second), so the
    # voice-activity detector cuts the clip at the pause (chunking_strategy=auto), as it cuts long audio.
    errors, skipped = [], 0
    for i in range(N):
        s1, s2 = grammar.sample(rng).en, grammar.sample(rng).en
        v = voice()
        a, b = _speech(s1, tmp_path / f"a{i}.flac", **v), _speech(s2, tmp_path / f"b{i}.flac", **v)
        lead, gap = np.zeros(int(0.3 * SR), np.float32), np.zeros(int(rng.uniform(0.5, 1.0) * SR), np.float32)
        audio = np.concatenate([lead, a, gap, b, lead])
        silence_start, silence_end = (len(lead) + len(a)) / SR, (len(lead) + len(a) + len(gap)) / SR
        body = _words(server, audio, chunking_strategy="auto")
        _check_inside_and_ordered(body, len(audio) / SR)
        words, n1 = body["words"], len(s1.split())
        if len(words) != n1 + len(s2.split()):  # a word lost or added: the sentences' edges are unknown
            skipped += 1
            print(f"skipped (word count): {s1!r} + {s2!r} -> {body['text']!r}")
            continue
        errors.append((words[n1 - 1]["end"] - silence_start, words[n1]["start"] - silence_end))
    ends, starts = np.array([e for e, _ in errors]), np.array([s for _, s in errors])
    median = float(np.median(np.abs(np.concatenate([ends, starts]))))
    print(f"\n{len(errors)} of {N} two-sentence clips scored ({skipped} skipped): median |error| of the edges "
          f"{median * 1000:.0f} ms (first sentence's last word end: median {np.median(ends) * 1000:+.0f} ms, "
          f"|max| {np.abs(ends).max() * 1000:.0f} ms; second's first word start: median "
          f"{np.median(starts) * 1000:+.0f} ms, |max| {np.abs(starts).max() * 1000:.0f} ms)")
    assert skipped <= 3
    assert median <= 0.080
    assert float(np.median(np.abs(ends))) <= 0.080 and float(np.median(np.abs(starts))) <= 0.080
