import io
import subprocess
import tempfile
import time
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch

from speechllm.audio import SAMPLE_RATE, AudioInfo, AudioLimits, LogMel, load_audio, probe_audio, resample
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


# ---- short clips ----------------------------------------------------------------------------------

def _logmel_before_padding(fe, wav):
    """LogMel.one as it was before clips shorter than a window were padded (the reference)."""
    s = fe.settings
    x = torch.as_tensor(wav, dtype=torch.float32)
    spec = torch.stft(x, s.n_fft, s.hop_length, window=torch.hann_window(s.n_fft), return_complex=True)
    power = spec[:, : max(1, x.numel() // s.hop_length)].abs() ** 2
    mel = torch.log10(torch.clamp(fe.filters @ power, min=1e-10))
    mel = torch.maximum(mel, mel.max() - 8.0)
    return (mel + 4.0) / 4.0


def test_logmel_unchanged_for_clips_longer_than_a_window(noise_wavs, speech_files):
    fe = LogMel()
    for wav in [*noise_wavs, load_audio(speech_files[0]), noise_wavs[0][: fe.settings.n_fft + 1]]:
        assert torch.equal(fe.one(wav), _logmel_before_padding(fe, wav))


@pytest.mark.parametrize("n", [1, 100, 200, 399])
def test_logmel_of_clips_shorter_than_a_window(n):
    fe = LogMel()
    wav = (0.1 * np.random.default_rng(n).standard_normal(n)).astype(np.float32)
    feats, lengths = fe([wav])
    assert feats.shape == (1, 80, max(1, n // 160)) and lengths.tolist() == [max(1, n // 160)]
    assert torch.isfinite(feats).all() and feats.std() > 0


def test_models_transcribe_a_100_sample_clip():
    from speechllm.builders import tiny_slam
    from speechllm.generate import transcribe
    from speechllm.modeldir import load_model
    from speechllm.tasks import Task

    wav = load_audio(write_wav_bytes(0.1 * np.random.default_rng(0).standard_normal(100), 16000))
    assert wav.shape == (100,)
    for model in (tiny_slam("llama"), load_model()):
        (text,) = transcribe(model, [wav], Task("transcribe"))
        assert isinstance(text, str)


# ---- what a file may cost ------------------------------------------------------------------------

def write_wav_bytes(samples, sr, subtype=None):
    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples, dtype=np.float32), sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def wav_declaring(rate: int) -> bytes:
    """A 100-sample 16-bit mono WAV whose header claims ``rate`` Hz (fmt chunk: rate at 24:28, bytes/s at 28:32)."""
    data = bytearray(write_wav_bytes(np.zeros(100), 16000, subtype="PCM_16"))
    assert data[24:28] == (16000).to_bytes(4, "little")
    data[24:28] = rate.to_bytes(4, "little")
    data[28:32] = (rate * 2 % 2**32).to_bytes(4, "little")
    return bytes(data)


@pytest.mark.parametrize("rate", [999_983, 2**31 - 1])
def test_absurd_sample_rates_are_refused_from_the_header(rate):
    data = wav_declaring(rate)
    assert len(data) < 1000
    start = time.perf_counter()
    with pytest.raises(AudioError, match=f"sample rate of {rate:,} Hz, outside the supported 8,000-192,000 Hz"):
        load_audio(data)
    with pytest.raises(AudioError, match="resample it to 16 kHz"):
        probe_audio(data)
    elapsed = time.perf_counter() - start
    print(f"{rate} Hz refused in {elapsed * 1000:.2f} ms")  # scipy's resample_poly took 4.3 s at 999,983 Hz
    assert elapsed < 5.0


def test_probe_reads_the_header(tmp_path):
    stereo = np.stack([_tone(44100), _tone(44100)], axis=1)
    data = write_wav_bytes(stereo, 44100)
    info = probe_audio(data)
    assert info == AudioInfo(sample_rate=44100, channels=2, frames=44100, seconds=1.0, format="WAV", subtype="PCM_16")
    path = tmp_path / "a.wav"
    path.write_bytes(data)
    assert probe_audio(path) == info
    with pytest.raises(AudioError, match=r"a.wav is 1.0 s long, over the 0 s limit: split it into shorter clips"):
        probe_audio(path, max_seconds=0.5)
    with pytest.raises(AudioError, match=r"has 2 channels, over the limit of 1: downmix it to mono"):
        probe_audio(data, limits=AudioLimits(max_channels=1))
    with pytest.raises(AudioError, match=r"decodes to 88,200 samples \(44,100 frames x 2 channels at 44,100 Hz\), "
                                         r"over the budget of 1,000: downmix it to mono or resample it to 16 kHz"):
        load_audio(data, limits=AudioLimits(max_samples=1000))
    with pytest.raises(AudioError, match="no audio samples"):
        probe_audio(write_wav_bytes(np.zeros(0), 16000))
    with pytest.raises(AudioError, match=r"cannot decode upload \(.*\): send wav, flac, ogg, webm, mp4/m4a or mp3 audio"):
        probe_audio(b"RIFF not really a wav file at all" * 4, name="upload")
    with pytest.raises(AudioError, match="9 channels, over the limit of 8"):
        load_audio(write_wav_bytes(np.zeros((1600, 9)), 16000))


def test_file_objects_are_rewound_and_read(tmp_path):
    data = write_wav_bytes(np.stack([_tone(48000), _tone(48000)], axis=1), 48000)
    with tempfile.SpooledTemporaryFile(max_size=1024) as f:  # what an upload's .file is
        f.write(data)  # left at its end, as after an upload
        assert probe_audio(f).frames == 48000 and f.tell() == 0
        f.seek(100)
        assert np.array_equal(load_audio(f), load_audio(data))
    with tempfile.SpooledTemporaryFile() as f, pytest.raises(AudioError, match="empty"):
        load_audio(f)


@pytest.fixture(scope="module")
def long_hires_flac():
    """599 s of 96 kHz stereo silence: ~220 KB of FLAC, 460 MB as float32."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=96000, channels=2, format="FLAC", subtype="PCM_16") as f:
        ten_seconds = np.zeros((960_000, 2), dtype=np.int16)
        for _ in range(59):
            f.write(ten_seconds)
        f.write(ten_seconds[:864_000])
    return buf.getvalue()


def test_small_upload_of_a_long_hires_file_is_refused_before_decoding(long_hires_flac):
    assert len(long_hires_flac) < 300_000
    tracemalloc.start()
    try:
        with pytest.raises(AudioError, match=r"decodes to 115,008,000 samples \(57,504,000 frames x 2 channels "
                                             r"at 96,000 Hz\), over the budget of 57,600,000"):
            load_audio(long_hires_flac, max_seconds=600)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5e6, peak  # decoding it whole would allocate 230-460 MB


def test_a_long_hires_file_within_the_budget_decodes_in_bounded_memory(long_hires_flac):
    tracemalloc.start()
    try:
        start = time.perf_counter()
        out = load_audio(long_hires_flac, limits=AudioLimits(max_samples=120_000_000))
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"599 s 96 kHz stereo FLAC decoded in {elapsed:.2f} s, traced peak {peak / 1e6:.1f} MB")
    assert out.shape == (599 * 16000,) and out.dtype == np.float32 and not out.any()
    # the 16 kHz mono output (38 MB) plus one block, not the 460 MB of a whole float32 decode
    assert peak < 1.5 * out.nbytes + 8e6, peak


# ---- sample values -------------------------------------------------------------------------------

def test_huge_finite_float_samples_are_peak_normalised():
    loud = 1e30 * _tone(16000, hz=300.0)
    out = load_audio(write_wav_bytes(loud, 16000, subtype="FLOAT"))
    assert np.isclose(np.abs(out).max(), 1.0)
    feats, _ = LogMel()([out])
    assert torch.isfinite(feats).all() and feats.std() > 0.1
    # both channels at float32's largest: the downmix must not overflow into inf
    biggest = np.full((1600, 2), np.finfo(np.float32).max, dtype=np.float32)
    biggest[::2] *= -1
    out = load_audio(write_wav_bytes(biggest, 44100, subtype="FLOAT"))
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0 + 1e-3
    # the same rule for arrays passed in decoded, without touching the caller's array
    arr = np.array([0.5, -3.0, 2.0], dtype=np.float32)
    assert np.allclose(load_audio(arr), [0.5 / 3, -1.0, 2.0 / 3]) and arr[1] == -3.0
    quiet = _tone(16000)
    assert load_audio(quiet) is quiet  # in range: returned as is


# ---- resampling quality --------------------------------------------------------------------------

def _snr_db(ref, test):
    n = min(len(ref), len(test))
    ref, test = ref[:n].astype(np.float64), test[:n].astype(np.float64)
    return 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - test) ** 2))


@pytest.mark.parametrize("rate,passband_hz,min_snr_db", [(44100, 7000, 50.0), (8000, 3500, 45.0)])
def test_soxr_agrees_with_scipy_polyphase_on_speech(rate, passband_hz, min_snr_db, speech_files, tmp_path):
    from fractions import Fraction

    from scipy.signal import butter, resample_poly, sosfiltfilt

    src = tmp_path / f"speech{rate}.wav"
    subprocess.run(["sox", speech_files[0], "-r", str(rate), str(src)], check=True)
    samples, sr = sf.read(str(src), dtype="float32")
    assert sr == rate
    ratio = Fraction(SAMPLE_RATE, rate)
    ours = load_audio(src)  # the streaming path
    scipy_ = resample_poly(samples.astype(np.float64), ratio.numerator, ratio.denominator)
    assert abs(len(ours) - len(scipy_)) <= 1
    n = min(len(ours), len(scipy_))
    assert np.corrcoef(ours[:n], scipy_[:n])[0, 1] > 0.9999  # measured 0.99994-0.999994
    # the two anti-aliasing filters differ only near the new Nyquist; below it they agree
    low = butter(8, passband_hz, fs=SAMPLE_RATE, output="sos")
    snr = _snr_db(sosfiltfilt(low, scipy_), sosfiltfilt(low, ours))
    print(f"{rate} Hz -> 16 kHz, soxr vs scipy below {passband_hz} Hz: SNR {snr:.1f} dB")
    assert snr > min_snr_db  # measured ~59 dB (44.1 kHz) and ~55 dB (8 kHz)
    # blocks through the streaming resampler == soxr's one-shot resample
    one_shot = resample(samples, rate)
    assert ours.shape == one_shot.shape and np.allclose(ours, one_shot, rtol=0, atol=1e-6)
