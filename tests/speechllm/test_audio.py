import io

import numpy as np
import pytest
import soundfile as sf
import torch

from speechllm.audio import LogMel, load_audio, resample
from speechllm.errors import AudioError
from tests.conftest import write_wav


def _tone(sr, seconds=1.0, hz=440.0):
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_formats_decode_to_16k_mono(fmt, tmp_path):
    stereo = np.stack([_tone(44100), _tone(44100)], axis=1)
    buf = io.BytesIO()
    sf.write(buf, stereo, 44100, format=fmt)
    out = load_audio(buf.getvalue())
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(out.size - 16000) <= 2
    path = tmp_path / f"a.{fmt.lower()}"
    path.write_bytes(buf.getvalue())
    assert np.allclose(load_audio(path), out)


def test_resampler_is_anti_aliased():
    # 16 kHz output has its Nyquist at 8 kHz: a 7 kHz tone survives, a 10 kHz tone must be filtered out
    kept = resample(_tone(44100, hz=7000.0), 44100)
    gone = resample(_tone(44100, hz=10000.0), 44100)
    rms = lambda x: float(np.sqrt(np.mean(x[1000:-1000] ** 2)))
    assert rms(kept) > 0.3
    assert rms(gone) < 0.01  # a naive decimation would alias it to 6 kHz at full strength


@pytest.mark.parametrize("payload,match", [
    (b"", "empty"),
    (b"this is not audio at all, just text" * 10, "cannot decode"),
])
def test_bad_bytes(payload, match):
    with pytest.raises(AudioError, match=match):
        load_audio(payload)


def test_missing_empty_nan_too_long(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32)))
    bad = np.zeros(1600, dtype=np.float32)
    bad[10] = np.nan
    buf = io.BytesIO()
    sf.write(buf, bad, 16000, format="WAV", subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(buf.getvalue())
    with pytest.raises(AudioError, match="limit"):
        load_audio(_tone(16000, seconds=3.0), max_seconds=2.0)


def test_logmel_batch_equals_single_and_no_window_padding(noise_wavs):
    fe = LogMel()
    feats, lengths = fe(noise_wavs)
    assert feats.shape == (4, 80, 100)  # longest clip is 1 s: padded to 100 frames, not 3000
    assert lengths.tolist() == [100, 43, 68, 18]
    for i, w in enumerate(noise_wavs):
        one, n = fe([w])
        assert torch.equal(one[0], feats[i, :, : n[0]])
        assert torch.all(feats[i, :, n[0]:] == 0)
