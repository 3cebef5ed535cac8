"""speechllm.vad on real speech (espeak-ng): shape, values, the batched path against silero's own
per-window API, thread safety, torch's thread count.

    .venv/bin/python -m pytest -q tests/speechllm/test_vad.py
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import soundfile as sf

from speechllm import vad
from tests.conftest import espeak_wav, python_stdout

SR = 16000


@pytest.fixture(scope="module")
def speech(speech_files) -> np.ndarray:
    """1 s of silence, two sentences 1 s apart, 1 s of silence (about 7 s)."""
    clips = [sf.read(f, dtype="float32")[0] for f in speech_files[:2]]
    gap = np.zeros(SR, dtype=np.float32)
    return np.concatenate([gap, clips[0], gap, clips[1], gap])


def test_one_probability_per_window(speech):
    p = vad.speech_probabilities(speech)
    assert p.dtype == np.float32 and p.shape == (-(-len(speech) // vad.WINDOW_SAMPLES),)
    assert ((0 <= p) & (p <= 1)).all()
    w = SR // vad.WINDOW_SAMPLES  # windows per second
    assert p[: w // 2].max() < 0.2 and p[-w // 2:].max() < 0.2  # the silences at both ends
    assert (p > 0.5).mean() > 0.4  # most of the sentences
    assert vad.speech_probabilities(speech[:100]).shape == (1,)
    assert vad.speech_probabilities(np.zeros(0, np.float32)).shape == (0,)
    frozen = speech.copy()
    frozen.flags.writeable = False  # e.g. np.frombuffer of an upload
    np.testing.assert_array_equal(vad.speech_probabilities(frozen), p)


def test_batched_path_matches_silero_per_window_api(speech):
    """The fast path (batched encoder, fused LSTM) is the one in use and gives silero's streaming numbers."""
    import silero_vad

    runner = vad._runner()
    assert isinstance(runner, vad._Fused), "the batched path was rejected at load: see the logged warning"
    streaming = vad._Streaming(silero_vad.load_silero_vad())(speech)
    np.testing.assert_allclose(vad.speech_probabilities(speech), streaming, atol=1e-4)


def test_threads_share_the_model(speech):
    other = speech[::-1].copy()
    expected = [vad.speech_probabilities(speech), vad.speech_probabilities(other)]
    results: dict[int, list[np.ndarray]] = {0: [], 1: []}

    def work(i, wav):
        for _ in range(5):
            results[i].append(vad.speech_probabilities(wav))

    threads = [threading.Thread(target=work, args=(i, w)) for i, w in enumerate((speech, other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 1):
        assert len(results[i]) == 5
        for r in results[i]:
            np.testing.assert_array_equal(r, expected[i])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="16000 Hz"):
        vad.speech_probabilities(np.zeros(8000, np.float32), sample_rate=8000)
    with pytest.raises(ValueError, match="mono"):
        vad.speech_probabilities(np.zeros((2, 8000), np.float32))


def test_loading_keeps_torch_thread_count():
    """silero_vad sets torch's thread count to 1 when imported; loading through speechllm.vad must not."""
    code = ("import numpy as np, torch; torch.set_num_threads(3); from speechllm.vad import speech_probabilities; "
            "speech_probabilities(np.zeros(4000, np.float32)); import silero_vad; print(torch.get_num_threads())")
    assert python_stdout(code) == "3"


def test_window_matches_the_server_planner():
    from server.longform import VAD_WINDOW

    assert vad.WINDOW_SAMPLES == VAD_WINDOW


def test_espeak_sentence_is_speech(tmp_path):
    wav = sf.read(espeak_wav("please pass the salt and pepper", tmp_path / "s.wav"), dtype="float32")[0]
    assert vad.speech_probabilities(wav).max() > 0.9
