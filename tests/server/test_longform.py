"""server.longform's speech planner on real speech: espeak-ng sentences separated by known silences,
their probabilities from the real VAD (speechllm.vad); and the joiner on speech chunks.

    .venv/bin/python -m pytest -q tests/server/test_longform.py

(plan_chunks, the energy split, and the joiner's de-duplication are tested in test_parts.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from server.longform import (Chunk, TextJoiner, VadParams, no_speech_prob, plan_chunks, plan_speech_chunks,
                             speech_regions, with_no_speech)
from speechllm.vad import WINDOW_SAMPLES, speech_probabilities
from tests.conftest import espeak_wav

SR = 16000
WINDOW_S = 16.0
TOLERANCE = int(0.1 * SR)  # how far outside a known silence a boundary may lie
SENTENCES = ["the small dog sees the red ball", "three cats sleep in the garden", "hello",
             "a quick brown fox jumps over the lazy dog near the river bank", "she sells sea shells by the sea shore",
             "it is raining again today", "please pass the salt and pepper", "we will meet at noon tomorrow"]


def trim(wav: np.ndarray) -> np.ndarray:
    """Without espeak's own leading and trailing silence: the silences between sentences are then known."""
    loud = np.flatnonzero(np.abs(wav) > 1e-3)
    return wav[loud[0]: loud[-1] + 1]


@pytest.fixture(scope="module")
def sentences(tmp_path_factory) -> list[np.ndarray]:
    d = tmp_path_factory.mktemp("longform")
    return [trim(sf.read(espeak_wav(t, d / f"s{i}.wav"), dtype="float32")[0]) for i, t in enumerate(SENTENCES)]


def build(clips, gaps_s, lead_s=0.5, tail_s=0.5):
    """clips separated by silences of gaps_s -> (wav, sentence spans, silence spans incl. lead and tail)."""
    parts, speech, silence, n = [], [], [], 0
    for i, clip in enumerate(clips):
        pause = int((lead_s if i == 0 else gaps_s[i - 1]) * SR)
        parts += [np.zeros(pause, np.float32), clip]
        silence.append((n, n + pause))
        speech.append((n + pause, n + pause + len(clip)))
        n += pause + len(clip)
    parts.append(np.zeros(int(tail_s * SR), np.float32))
    silence.append((n, n + int(tail_s * SR)))
    return np.concatenate(parts), speech, silence


@pytest.fixture(scope="module")
def clip(sentences):
    """Sixteen sentences (twice the list), 0.4-1.0 s apart: about 40 s. -> (wav, probs, speech, silence)."""
    gaps = np.random.default_rng(0).uniform(0.4, 1.0, size=2 * len(sentences) - 1)
    wav, speech, silence = build(sentences * 2, gaps)
    return wav, speech_probabilities(wav), speech, silence


def in_silence(sample: int, silence) -> bool:
    return any(a - TOLERANCE <= sample <= b + TOLERANCE for a, b in silence)


#: a piece starts at the VAD's onset (no padding before it): within a few windows of the clip's first
#: sample, which espeak-ng precedes with a little near-silence
ONSET = 3 * WINDOW_SAMPLES


def containing(span, chunks) -> list[int]:
    """Indices of the chunks that hold any of span; asserts the first one holds all of it (its onset
    within ONSET)."""
    hits = [i for i, c in enumerate(chunks) if c.start < span[1] and span[0] < c.end]
    assert hits and chunks[hits[0]].start <= span[0] + ONSET and span[1] <= chunks[hits[0]].end, (span, hits)
    return hits


def test_one_piece_per_sentence_cut_in_the_silences(clip):
    wav, probs, speech, silence = clip
    chunks = plan_speech_chunks(wav, probs, WINDOW_S, merge_seconds=0)
    assert len(chunks) == len(speech)
    for c in chunks:
        assert (c.start, c.end) == (c.seg_start, c.seg_end) and not c.overlaps_previous
        assert in_silence(c.start, silence) and in_silence(c.end, silence), c
    assert [containing(s, chunks) for s in speech] == [[i] for i in range(len(speech))]
    assert all(a.end <= b.start for a, b in zip(chunks, chunks[1:]))  # padding stops at the pause's midpoint
    assert chunks[0].start >= 0 and chunks[-1].end <= len(wav)
    long_enough = [c for c, (a, b) in zip(chunks, speech) if b - a > SR]  # sentences, not "hello"
    assert all(c.no_speech_prob < 0.3 for c in long_enough), [c.no_speech_prob for c in chunks]
    assert speech_regions(probs, len(wav)) and len(speech_regions(probs, len(wav))) == len(speech)


@pytest.mark.parametrize("merge_seconds", [4.0, 7.0, 12.0])
def test_merging_groups_neighbours_up_to_merge_seconds(clip, merge_seconds):
    wav, probs, speech, silence = clip
    pieces = plan_speech_chunks(wav, probs, WINDOW_S, merge_seconds=0)
    chunks = plan_speech_chunks(wav, probs, WINDOW_S, merge_seconds=merge_seconds)
    assert len(chunks) < len(pieces)
    limit = merge_seconds * SR
    starts, ends = [p.start for p in pieces], [p.end for p in pieces]
    for c in chunks:  # each is a run of whole pieces, no longer than merge_seconds unless a piece alone is
        first, last = starts.index(c.start), ends.index(c.end)
        assert c.end - c.start <= limit or first == last
        assert in_silence(c.start, silence) and in_silence(c.end, silence)
    for a, b in zip(chunks, chunks[1:]):  # greedy: the next piece would not have fitted
        next_piece = pieces[starts.index(b.start)]
        assert next_piece.end - a.start > limit
    for s in speech:
        assert len(containing(s, chunks)) == 1


def test_no_merging_across_a_long_pause(sentences):
    wav, speech, _ = build(sentences[:3], [0.5, 3.0])
    probs = speech_probabilities(wav)
    chunks = plan_speech_chunks(wav, probs, WINDOW_S, merge_seconds=WINDOW_S)
    assert [containing(s, chunks) for s in speech] == [[0], [0], [1]]
    chunks = plan_speech_chunks(wav, probs, WINDOW_S, merge_seconds=WINDOW_S, params=VadParams(max_merge_gap_s=4))
    assert len(chunks) == 1


@pytest.mark.parametrize("amplitude", [0.0, 0.001])
def test_silence_and_low_noise_give_no_chunks(amplitude):
    wav = (amplitude * np.random.default_rng(0).standard_normal(60 * SR)).astype(np.float32)
    assert plan_speech_chunks(wav, speech_probabilities(wav), WINDOW_S, merge_seconds=5.0) == []


def test_continuous_speech_longer_than_the_window_is_split(tmp_path):
    text = " and ".join(SENTENCES * 3)  # no punctuation: no pauses
    wav = sf.read(espeak_wav(text, tmp_path / "long.wav"), dtype="float32")[0]
    assert len(wav) > 40 * SR
    probs = speech_probabilities(wav)
    assert len(speech_regions(probs, len(wav))) == 1
    chunks = plan_speech_chunks(wav, probs, WINDOW_S, merge_seconds=5.0, overlap_s=0.5)
    assert len(chunks) >= 3 and all(c.end - c.start <= WINDOW_S * SR for c in chunks)
    assert not chunks[0].overlaps_previous and all(c.overlaps_previous for c in chunks[1:])
    for a, b in zip(chunks, chunks[1:]):
        assert a.seg_end == b.seg_start and b.start == b.seg_start - SR // 2  # the energy split's overlap
    assert all(c.no_speech_prob < 0.3 for c in chunks)


def test_no_speech_prob_of_a_mostly_silent_chunk(sentences):
    wav, speech, _ = build(sentences[2:3], [], lead_s=10.0, tail_s=4.0)  # "hello" in 14.5 s
    probs = speech_probabilities(wav)
    energy = with_no_speech(plan_chunks(wav, WINDOW_S), probs)
    assert len(energy) == 1 and energy[0].no_speech_prob > 0.8
    speech_only = plan_speech_chunks(wav, probs, WINDOW_S)
    assert len(speech_only) == 1 and speech_only[0].no_speech_prob < 0.5
    assert no_speech_prob(probs, 0, 5 * SR) > 0.95 and no_speech_prob(probs, 0, 0) == 1.0


def test_vad_params():
    assert VadParams().neg_threshold == pytest.approx(0.35)
    assert VadParams(threshold=0.3).neg_threshold == pytest.approx(0.15)  # the threshold alone moves both
    with pytest.raises(ValueError, match="neg_threshold"):
        VadParams(threshold=0.3, neg_threshold=0.4)


def test_probabilities_must_match_the_audio(clip):
    wav, probs, _, _ = clip
    with pytest.raises(ValueError, match="one per 512 samples"):
        plan_speech_chunks(wav, probs[:-1], WINDOW_S)
    assert plan_speech_chunks(wav[:0], probs[:0], WINDOW_S) == []


def test_joiner_keeps_words_repeated_across_speech_chunks():
    speech_chunks = [Chunk(0, 100, 0, 100), Chunk(200, 300, 200, 300), Chunk(300, 400, 350, 400)]
    texts = ["no", "no not that", "that one"]  # the last overlaps its predecessor (an energy split)
    j = TextJoiner.for_chunks(speech_chunks)
    for t in texts:
        j.finish_chunk(t)
    assert j.joined == "no no not that one"
    streamed, out = TextJoiner.for_chunks(speech_chunks), []
    for t in texts:
        out += [streamed.feed(t[i:i + 2]) for i in range(0, len(t), 2)]
        out.append(streamed.finish_chunk(t))
    assert "".join(out) == j.joined and streamed.parts == j.parts == ["no", "no not that", "one"]
    legacy = TextJoiner()  # without chunks: every chunk is de-duplicated, as before
    for t in texts:
        legacy.finish_chunk(t)
    assert legacy.joined == "no not that one"
