"""CTC forced alignment (speechllm.align): the Viterbi path against a brute-force search of every path on
small inputs; word times on the demo model's own transcripts of espeak-ng speech."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soundfile as sf

from speechllm.align import AlignmentError, WordAligner, ctc_forced_align, word_timestamps_unavailable
from tests.conftest import espeak_wav, require_tools


def _collapse(path, blank):
    out, prev = [], None
    for c in path:
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return out


def _brute_force(lp: np.ndarray, targets: list[int], blank: int) -> float:
    """The best score over every path of T symbols that collapses to ``targets`` (-inf: none does)."""
    T, C = lp.shape
    best = -np.inf
    for path in itertools.product(range(C), repeat=T):
        if _collapse(path, blank) == targets:
            best = max(best, float(sum(lp[t, c] for t, c in enumerate(path))))
    return best


def _path_score(lp, aligned, targets, blank):
    return float(sum(lp[t, blank if k < 0 else targets[k]] for t, k in enumerate(aligned)))


@pytest.mark.parametrize("seed", range(40))
def test_viterbi_equals_brute_force_on_small_inputs(seed):
    rng = np.random.default_rng(seed)
    T, C = int(rng.integers(1, 7)), 4
    blank = C - 1
    S = int(rng.integers(0, min(T, 3) + 1))
    targets = [int(v) for v in rng.integers(0, C - 1, size=S)]  # repeats happen: they need a blank between
    lp = np.log(rng.dirichlet(np.ones(C) * 0.5, size=T))
    best = _brute_force(lp, targets, blank)
    if not np.isfinite(best):
        with pytest.raises(ValueError):
            ctc_forced_align(lp, targets, blank)
        return
    aligned = ctc_forced_align(lp, targets, blank)
    assert aligned.shape == (T,)
    # a valid CTC path of the targets ...
    emitted = [blank if k < 0 else targets[k] for k in aligned]
    assert _collapse(emitted, blank) == targets
    assert all(k1 <= k2 for k1, k2 in zip([k for k in aligned if k >= 0], [k for k in aligned if k >= 0][1:]))
    # ... with the best score of all
    assert _path_score(lp, aligned, targets, blank) == pytest.approx(best, abs=1e-9)


def test_repeated_tokens_need_a_blank_between():
    lp = np.log(np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="2 frames cannot hold 2 tokens"):
        ctc_forced_align(lp, [1, 1], blank=2)
    assert list(ctc_forced_align(np.log(np.full((3, 3), 1 / 3)), [1, 1], blank=2)) == [0, -1, 1]


def test_a_peak_per_token_is_found():
    """Tokens 0 and 1 peak at frames 2 and 5 of 8: the path puts them there."""
    p = np.full((8, 3), 0.05)
    p[:, 2] = 0.9
    p[2] = [0.9, 0.05, 0.05]
    p[5] = [0.05, 0.9, 0.05]
    assert list(ctc_forced_align(np.log(p), [0, 1], blank=2)) == [-1, -1, 0, -1, -1, 1, -1, -1]


def test_which_models_can_give_word_timestamps():
    assert word_timestamps_unavailable({"family": "slam", "projector": {"kind": "ctc_compress"}}) is None
    assert word_timestamps_unavailable({"family": "slam", "projector": {"kind": "ctc_embed"}}) is None
    assert "no CTC head (projector kind stack_mlp)" in word_timestamps_unavailable(
        {"family": "slam", "projector": {"kind": "stack_mlp"}})
    assert "no CTC head (family qwen2_audio)" in word_timestamps_unavailable({"family": "qwen2_audio"})


def test_a_model_without_ctc_head_is_refused(tmp_path):
    from speechllm.builders import tiny_slam

    tiny_slam("llama", projector="stack_mlp").save(tmp_path / "m", provenance={"built_by": "tests"})
    with pytest.raises(AlignmentError, match="no CTC head"):
        WordAligner.load(tmp_path / "m")


@pytest.fixture(scope="module")
def demo_aligner():
    from speechllm.modeldir import DEMO_DIR

    return WordAligner.load(DEMO_DIR)


def test_word_times_of_a_demo_transcript(demo_aligner, tmp_path):
    """Each word of the transcript, in order, inside the clip; the first starts near the speech's onset
    after 0.4 s of silence and the last ends near its end (espeak-ng's own silences trimmed)."""
    require_tools("espeak-ng", "sox", fix="apt-get install espeak-ng sox; scripts/setup.sh does")
    from speechllm.generate import transcribe
    from speechllm.modeldir import DEMO_DIR, load_model

    speech = sf.read(espeak_wav("the small dog sees the red ball", tmp_path / "a.wav"), dtype="float32")[0]
    loud = np.nonzero(np.abs(speech) > 0.01 * np.abs(speech).max())[0]
    speech = speech[loud[0]:loud[-1] + 1]
    pad = np.zeros(6400, dtype=np.float32)
    wav = np.concatenate([pad, speech, pad])
    text = transcribe(load_model(DEMO_DIR), [wav])[0]
    words = demo_aligner.words(wav, text)
    print(text, [w.to_openai() for w in words])
    assert [w.word for w in words] == text.split()
    assert all(0 <= w.start < w.end <= len(wav) / 16000 for w in words)
    assert all(a.end <= b.start for a, b in zip(words, words[1:]))
    assert abs(words[0].start - 0.4) < 0.1 and abs(words[-1].end - (0.4 + len(speech) / 16000)) < 0.1
