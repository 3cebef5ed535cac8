"""What browsers record (webm/opus, ogg/opus, mp4-m4a/aac) and mp3, decoded by PyAV beside soundfile:
the same espeak-ng clip in each format gives the demo model's text of its wav through ``slimspeech
transcribe``; broken files of each container are one ``error:`` line; the decode budget holds for
PyAV's formats too, from their metadata and while decoding (a header that lies is caught)."""

from __future__ import annotations

import io
import struct
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from speechllm.audio import AudioLimits, load_audio, probe_audio
from speechllm.errors import AudioError
from tests.conftest import BROWSER_FORMATS, encode_audio, espeak_wav, require_tools

FORMATS = list(BROWSER_FORMATS)
SENTENCE = "the small dog sees the red ball in the garden"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[str, np.ndarray]:
    """(the espeak-ng wav's path, its 16 kHz samples)."""
    require_tools("espeak-ng", "sox", fix="apt-get install espeak-ng sox; scripts/setup.sh does")
    path = espeak_wav(SENTENCE, tmp_path_factory.mktemp("fmt") / "clip.wav")
    return path, sf.read(path, dtype="float32")[0]


@pytest.fixture(scope="module")
def encoded(clip) -> dict[str, bytes]:
    return {kind: encode_audio(clip[1], 16000, kind) for kind in FORMATS}


def _run(*args):
    import contextlib
    from types import SimpleNamespace

    from speechllm import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.mark.parametrize("kind", FORMATS)
def test_each_format_decodes_to_the_clip(kind, clip, encoded):
    wav = clip[1]
    info = probe_audio(encoded[kind])
    assert info.format == {"webm": "WEBM", "ogg": "OGG", "m4a": "MP4", "mp3": "MP3"}[kind], info
    assert info.subtype == {"webm": "OPUS", "ogg": "OPUS", "m4a": "AAC", "mp3": "MP3"}[kind], info
    assert info.channels == 1 and info.sample_rate == BROWSER_FORMATS[kind][2]
    # encoders add priming and padding (opus 6.5 ms, aac 2048 samples, mp3 one frame): tens of ms
    assert abs(info.seconds - len(wav) / 16000) < 0.08, info
    out = load_audio(encoded[kind])
    assert out.dtype == np.float32 and out.ndim == 1 and abs(out.size - wav.size) < 0.08 * 16000
    # the same waveform, up to the codec's delay and its loss: the best normalised cross-correlation
    # over lags of +-80 ms
    n = min(out.size, wav.size)
    a, b = wav[:n].astype(np.float64), out[:n].astype(np.float64)
    xc = np.fft.irfft(np.fft.rfft(b, 2 * n) * np.conj(np.fft.rfft(a, 2 * n)))
    best = float(np.concatenate([xc[:1281], xc[-1280:]]).max() / (np.linalg.norm(a) * np.linalg.norm(b)))
    print(f"{kind}: {len(encoded[kind]):,} bytes, {info.seconds:.3f} s, correlation with the wav {best:.3f}")
    assert best > 0.9, best


def test_browser_formats_transcribe_like_their_wav_on_the_demo_model(clip, encoded, tmp_path):
    paths = [clip[0]]
    for kind in FORMATS:
        path = tmp_path / f"clip.{kind}"
        path.write_bytes(encoded[kind])
        paths.append(str(path))
    out = _run("transcribe", *paths)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    print(dict(zip(["wav", *FORMATS], lines)))
    assert len(lines) == 1 + len(FORMATS)
    assert lines[0].strip(), "the demo model heard nothing in the wav"
    assert lines[1:] == [lines[0]] * len(FORMATS), lines


def _broken(data: bytes, how: str) -> bytes:
    if how == "header_only":  # cut before the first whole audio packet
        return data[:200]
    # the container's magic bytes, then noise
    return data[:16] + np.random.default_rng(0).bytes(4000)


@pytest.mark.parametrize("how", ["header_only", "garbage"])
@pytest.mark.parametrize("kind", FORMATS)
def test_a_broken_file_of_each_container_is_one_error_line(kind, how, encoded, clip, tmp_path):
    path = tmp_path / f"broken.{kind}"
    path.write_bytes(_broken(encoded[kind], how))
    with pytest.raises(AudioError):
        load_audio(path)
    out = _run("transcribe", clip[0], str(path))  # files are checked before the model loads
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert str(path) in lines[0] and ("cannot decode" in lines[0] or "no audio samples" in lines[0]), lines[0]


@pytest.mark.parametrize("kind", FORMATS)
def test_a_file_cut_mid_stream_decodes_its_head_or_is_refused(kind, encoded):
    """What FFmpeg reads of a file cut in the middle: its first part, or a clean AudioError (aac's last
    partial frame), never anything else."""
    data = encoded[kind]
    try:
        out = load_audio(data[: len(data) // 2])
    except AudioError as exc:
        assert "cannot decode" in str(exc)
    else:
        assert 0 < out.size < load_audio(data).size


def test_a_playlist_is_not_opened(tmp_path):
    """FFmpeg's own format guess would open an HLS playlist and read the files it names; only the
    demuxer of the container the first bytes name is ever opened."""
    secret = tmp_path / "secret.wav"
    sf.write(str(secret), np.zeros(1600, dtype=np.float32), 16000)
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{secret}\n#EXT-X-ENDLIST\n".encode()
    with pytest.raises(AudioError, match="cannot decode"):
        load_audio(playlist)


def _long_opus(seconds: float) -> bytes:
    """``seconds`` of quiet noise as webm/opus, with its duration in the header (not live)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as out:
        stream = out.add_stream("libopus", rate=48000, layout="mono")
        stream.bit_rate = 6000
        rng = np.random.default_rng(1)
        for i in range(int(seconds * 50)):  # 20 ms frames
            frame = av.AudioFrame.from_ndarray((0.01 * rng.standard_normal((1, 960))).astype(np.float32),
                                               format="flt", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * 960
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


@pytest.fixture(scope="module")
def minute_webm() -> bytes:
    return _long_opus(60.0)


def test_budget_is_checked_from_the_metadata_before_decoding(minute_webm):
    info = probe_audio(minute_webm)
    assert abs(info.seconds - 60.0) < 0.05 and info.frames * info.channels > 2_000_000
    tracemalloc.start()
    try:
        with pytest.raises(AudioError, match=r"over the budget of 1,000,000"):
            load_audio(minute_webm, limits=AudioLimits(max_samples=1_000_000))
        with pytest.raises(AudioError, match=r"is 60.0 s long, over the 30 s limit"):
            load_audio(minute_webm, max_seconds=30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2e6, peak  # decoding it would hold 60 s of 48 kHz float32 (11.5 MB)


def test_a_header_that_lies_is_caught_while_decoding(minute_webm):
    """The webm's Segment Duration rewritten to 0.1 s: the probe believes it, decoding stops at the budget."""
    i = minute_webm.find(b"\x44\x89\x88")  # EBML Duration element, an 8-byte float (ms)
    assert i > 0
    lying = minute_webm[: i + 3] + struct.pack(">d", 100.0) + minute_webm[i + 11:]
    assert probe_audio(lying).seconds == pytest.approx(0.1)
    with pytest.raises(AudioError, match=r"decodes to more than [\d,]+ samples .* over the budget of 480,000"):
        load_audio(lying, limits=AudioLimits(max_samples=480_000))
    with pytest.raises(AudioError, match=r"over the 10 s limit"):
        load_audio(lying, max_seconds=10)
    assert load_audio(lying).size == pytest.approx(60 * 16000, abs=400)  # within the budget: all of it


def test_a_recording_without_duration_is_timed_from_its_packets(encoded, clip):
    """MediaRecorder's webm has no duration in its header: the probe reads its packets' timestamps."""
    import av

    with av.open(io.BytesIO(encoded["webm"])) as c:
        assert c.duration is None and c.streams.audio[0].duration is None
    assert abs(probe_audio(encoded["webm"]).seconds - len(clip[1]) / 16000) < 0.05


def test_stereo_aac_is_downmixed(clip):
    wav = clip[1]
    stereo = np.stack([wav, wav], axis=1)  # the same on both channels
    data = encode_audio(stereo, 16000, "m4a")
    assert probe_audio(data).channels == 2
    out = load_audio(data)
    assert abs(out.size - wav.size) < 0.08 * 16000 and 0.3 < np.abs(out).max() <= 1.0
