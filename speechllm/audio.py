"""Audio input: encoded bytes, a path or an upload's file object -> 16 kHz mono float32, and log-mel features.

    from speechllm.audio import AudioLimits, LogMel, load_audio, probe_audio
    wav = load_audio("clip.flac")                    # (S,) float32 in [-1, 1], 16 kHz
    wav = load_audio(upload.file, max_seconds=30)    # a seekable binary file object is rewound and read
    info = probe_audio(data)                         # header only: sample_rate, channels, frames, seconds
    feats, lengths = LogMel()([wav, wav[:8000]])     # (B, n_mels, T) float32, (B,) frames

Every problem with the audio is an ``AudioError`` whose message names it and its fix.

Formats: soundfile (libsndfile) reads wav, flac and ogg (vorbis, opus); PyAV (FFmpeg) reads what
browsers record and phones send: webm/mkv (opus: Chrome, Firefox), mp4/m4a/mov (aac: Safari),
mp3 and raw aac (adts), and any ogg libsndfile cannot. The container is told from the file's first
bytes and only its demuxer is opened, never FFmpeg's guess (which reaches playlists and URLs).

What a file may cost is decided from its header, before any sample is decoded (``AudioLimits``):

    min_sample_rate=8000, max_sample_rate=192000   rates outside this range are refused
    max_channels=8                                 more channels are refused
    max_samples=57_600_000                         frames x channels a file may decode to
                                                   (600 s of 48 kHz stereo)

so a small upload that declares hours of multichannel audio, or an absurd sample rate, is refused
in microseconds instead of costing gigabytes. PyAV's "header" is the stream's metadata, its first
decoded frame, and, where the header has no duration (MediaRecorder's webm), its packets'
timestamps, read without decoding them. The budget is checked again while decoding, as a
compressed stream's header or timestamps can lie. Within the limits, decoding runs in blocks of about
one second: each block is downmixed to mono and fed to a streaming resampler, so peak memory is the
16 kHz mono output plus one block, whatever the input's rate and channel count.

Sample values: NaN or infinite samples are refused. Float audio whose peak (after the downmix)
exceeds 1.0 is scaled so that its peak is 1.0 (decoded integer PCM never exceeds 1.0); this takes
a second decoding pass, for such files only. Arrays passed in already decoded follow the same rule.

Resampling is soxr's 'HQ' quality (20-bit precision, linear phase): its stopband is already far
below the 80 dB range LogMel keeps, and 'VHQ' (28-bit) is finer than float32 samples can carry,
at 1.5-2x the cost. Its cost does not depend on how odd the rate ratio is.

Features are computed per clip and padded to the longest clip of the batch only, so batching never
changes a clip's features and short clips are not padded to 30 s. A clip shorter than one window
(n_fft samples) is zero-padded to a window, so it still gets max(1, S // hop_length) frames.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Union

import numpy as np
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F

from .errors import AudioError

SAMPLE_RATE = 16000

# See the module docstring for why HQ and not VHQ.
RESAMPLE_QUALITY = "HQ"

#: What load_audio and probe_audio accept as encoded audio.
AudioSource = Union[bytes, bytearray, str, Path, BinaryIO]


@dataclass(frozen=True)
class AudioLimits:
    """What an encoded file may declare in its header; checked before anything is decoded."""

    min_sample_rate: int = 8000
    max_sample_rate: int = 192000
    max_channels: int = 8
    #: frames x channels a file may decode to; the default is 600 s of 48 kHz stereo.
    max_samples: int = 600 * 48000 * 2


@dataclass(frozen=True)
class AudioInfo:
    """An encoded file's header, as read by probe_audio."""

    sample_rate: int
    channels: int
    frames: int
    seconds: float
    format: str  # soundfile's major format, e.g. "WAV", "FLAC", "OGG"
    subtype: str  # e.g. "PCM_16", "FLOAT", "VORBIS"


def resample(samples: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Anti-aliased resampling of a (S,) array to float32 (soxr, quality RESAMPLE_QUALITY)."""
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if sr_in == sr_out:
        return x
    return soxr.resample(x, sr_in, sr_out, quality=RESAMPLE_QUALITY)


#: what to send instead, in every message about a file that cannot be decoded
SEND = "send wav, flac, ogg, webm, mp4/m4a or mp3 audio"

#: the container names AudioInfo.format gives files decoded by PyAV, by FFmpeg demuxer
_AV_FORMATS = {"matroska": "WEBM", "mov": "MP4", "mp3": "MP3", "aac": "AAC", "ogg": "OGG"}


def _label(src, name: str | None) -> str:
    if name:
        return name
    if isinstance(src, (str, Path)):
        return str(src)
    file_name = getattr(src, "name", None)
    return file_name if isinstance(file_name, str) else "audio data"


def _undecodable(label: str, exc: Exception) -> AudioError:
    # soundfile's LibsndfileError has error_string, PyAV's FFmpegError strerror: the library's own words
    reason = getattr(exc, "error_string", None) or getattr(exc, "strerror", None) or type(exc).__name__
    return AudioError(f"cannot decode {label} ({reason}): {SEND}")


def _demuxer(head: bytes) -> str | None:
    """The FFmpeg demuxer of a file PyAV decodes here, from its first bytes; None for the rest.

    Only these demuxers are ever opened: FFmpeg left to guess would also open playlists and other
    formats that read further files or URLs.
    """
    if head[:4] == b"\x1aE\xdf\xa3":  # EBML: webm (Chrome's and Firefox's MediaRecorder), mkv
        return "matroska"
    if head[4:8] == b"ftyp":  # ISO base media: mp4, m4a (Safari's MediaRecorder), mov, 3gp
        return "mov"
    if head[:4] == b"OggS":  # libsndfile reads ogg vorbis and opus first; PyAV the ogg it cannot
        return "ogg"
    if head[:3] == b"ID3":  # an ID3v2 tag opens most mp3 files
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF:
        if head[1] & 0xF6 == 0xF0:  # ADTS (raw AAC): 12-bit sync word, layer 00
            return "aac"
        if head[1] & 0xE0 == 0xE0 and head[1] & 0x06:  # an MPEG audio frame: 11-bit sync, layer I-III
            return "mp3"
    return None


class _SoundFileSource:
    """wav, flac, ogg (and the rest libsndfile reads) through soundfile."""

    def __init__(self, f: sf.SoundFile, label: str):
        self.f, self.label = f, label
        self.info = AudioInfo(sample_rate=int(f.samplerate), channels=int(f.channels), frames=int(f.frames),
                              seconds=f.frames / f.samplerate if f.samplerate > 0 else 0.0,
                              format=str(f.format), subtype=str(f.subtype))

    def blocks(self) -> Iterator[np.ndarray]:
        """(n, channels) float32 blocks of about a second, reusing one buffer."""
        info = self.info
        block = np.empty((min(info.frames, max(1, info.sample_rate)), info.channels), dtype=np.float32)
        self.f.seek(0)
        while True:
            try:
                got = self.f.read(dtype="float32", always_2d=True, out=block)
            except RuntimeError as exc:  # LibsndfileError: a header that is fine over data that is corrupt
                raise _undecodable(self.label, exc) from None
            if len(got) == 0:
                return
            yield got


class _AvSource:
    """webm/mkv, mp4/m4a, mp3, adts aac (and ogg libsndfile cannot read) through PyAV (FFmpeg).

    The probe reads the container's stream metadata (sample rate, channels, duration) and decodes
    the first packets up to one frame, whose rate and channel count are the truth (HE-AAC's header
    says half its rate). A stream with no duration in its header (MediaRecorder's webm) has its
    packets' timestamps read, without decoding them. The decoded count is checked again while
    decoding (load_audio), as a compressed stream's timestamps can lie.
    """

    def __init__(self, handle, demuxer: str, label: str):
        self.handle, self.demuxer, self.label = handle, demuxer, label
        import av

        with self._container() as c:
            stream = self._stream(c)
            seconds = None
            if stream.duration is not None and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            elif c.duration is not None and c.duration > 0:
                seconds = c.duration / av.time_base
            first, start, end = None, None, None
            try:
                for packet in c.demux(stream):
                    if first is None:
                        decoded = packet.decode()
                        first = decoded[0] if decoded else None
                    t = packet.pts if packet.pts is not None else packet.dts
                    if t is not None:
                        start = t if start is None else min(start, t)
                        stop = t + (packet.duration or 0)
                        end = stop if end is None else max(end, stop)
                    if first is not None and seconds is not None:
                        break
            except av.FFmpegError as exc:
                raise _undecodable(label, exc) from None
            if seconds is None:
                seconds = float((end - start) * stream.time_base) if end is not None and stream.time_base else 0.0
            codec = stream.codec_context.codec.canonical_name  # "mp3", not its decoder "mp3float"
        rate = int(first.sample_rate) if first is not None else 0
        channels = int(first.layout.nb_channels) if first is not None else 0
        frames = int(round(seconds * rate)) if first is not None else 0
        self.info = AudioInfo(sample_rate=rate, channels=channels, frames=frames,
                              seconds=frames / rate if rate > 0 else 0.0,
                              format=_AV_FORMATS[demuxer], subtype=codec.upper())

    @contextmanager
    def _container(self):
        import av

        if not isinstance(self.handle, str):
            self.handle.seek(0)
        try:
            c = av.open(self.handle, "r", format=self.demuxer, metadata_errors="ignore")
        except Exception as exc:  # noqa: BLE001 - FFmpegError, or PyAV refusing what FFmpeg handed it
            raise _undecodable(self.label, exc) from None
        with c:
            yield c

    def _stream(self, c):
        if not c.streams.audio:
            raise AudioError(f"{self.label} has no audio stream: {SEND}")
        return c.streams.audio[0]

    def blocks(self) -> Iterator[np.ndarray]:
        """(n, channels) float32 blocks of about a second (whole decoded frames)."""
        import av

        info = self.info
        with self._container() as c:
            stream = self._stream(c)
            planar = av.AudioResampler(format="fltp")  # sample format only: layout and rate stay the frame's
            pending, n = [], 0
            try:
                for frame in c.decode(stream):
                    if frame.sample_rate != info.sample_rate or frame.layout.nb_channels != info.channels:
                        raise AudioError(
                            f"{self.label} changes from {info.sample_rate:,} Hz x {info.channels} channels to "
                            f"{frame.sample_rate:,} Hz x {frame.layout.nb_channels} mid-stream: re-encode it")
                    for f in planar.resample(frame):
                        pending.append(f.to_ndarray())
                        n += f.samples
                    if n >= info.sample_rate:
                        yield np.concatenate(pending, axis=1).T
                        pending, n = [], 0
                for f in planar.resample(None):
                    pending.append(f.to_ndarray())
            except av.FFmpegError as exc:
                raise _undecodable(self.label, exc) from None
            if pending:
                yield np.concatenate(pending, axis=1).T


def _handle(src: AudioSource, label: str):
    """A path string or a seekable binary file object positioned at 0."""
    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_file():
            raise AudioError(f"audio file not found: {path} (check the path)")
        return str(path)
    if isinstance(src, (bytes, bytearray)):
        if len(src) == 0:
            raise AudioError(f"{label} is empty (0 bytes): {SEND}")
        return io.BytesIO(src)
    if hasattr(src, "read") and hasattr(src, "seek"):
        if hasattr(src, "seekable") and not src.seekable():
            raise TypeError("load_audio needs a seekable binary file object (e.g. a SpooledTemporaryFile)")
        src.seek(0, io.SEEK_END)
        size = src.tell()
        src.seek(0)  # an upload's file object is usually left at its end by whoever wrote it
        if size == 0:
            raise AudioError(f"{label} is empty (0 bytes): {SEND}")
        return src
    raise TypeError(f"cannot read audio from a {type(src).__name__}: pass bytes, a path or a binary file object")


@contextmanager
def _open(src: AudioSource, label: str) -> Iterator[_SoundFileSource | _AvSource]:
    """The file's decoder, its header read: soundfile for wav, flac and ogg; PyAV for webm, mp4/m4a, mp3, aac."""
    handle = _handle(src, label)
    if isinstance(handle, str):
        with open(handle, "rb") as f:
            head = f.read(16)
    else:
        head = handle.read(16)
        handle.seek(0)
    demuxer = _demuxer(head)
    if demuxer is None or demuxer == "ogg":
        try:
            f = sf.SoundFile(handle)
        except Exception as exc:
            if demuxer is None:
                raise _undecodable(label, exc) from None
        else:
            with f:
                yield _SoundFileSource(f, label)
            return
    yield _AvSource(handle, demuxer, label)


def _seconds_error(label: str, seconds: float, max_seconds: float) -> AudioError:
    return AudioError(f"{label} is {seconds:.1f} s long, over the {max_seconds:.0f} s limit: "
                      "split it into shorter clips")


def _budget_error(label: str, frames: int, info: AudioInfo, limits: AudioLimits, at_least: bool = False) -> AudioError:
    more = "more than " if at_least else ""
    return AudioError(f"{label} decodes to {more}{frames * info.channels:,} samples ({frames:,} frames x "
                      f"{info.channels} channels at {info.sample_rate:,} Hz), over the budget of "
                      f"{limits.max_samples:,}: downmix it to mono or resample it to 16 kHz")


def _check(info: AudioInfo, limits: AudioLimits, max_seconds: float | None, label: str) -> None:
    if not limits.min_sample_rate <= info.sample_rate <= limits.max_sample_rate:
        if info.frames <= 0 and info.sample_rate == 0:  # PyAV found no frame to read a rate from
            raise AudioError(f"{label} has no audio samples: send a non-empty recording")
        raise AudioError(f"{label} has a sample rate of {info.sample_rate:,} Hz, outside the supported "
                         f"{limits.min_sample_rate:,}-{limits.max_sample_rate:,} Hz: resample it to 16 kHz")
    if info.channels > limits.max_channels:
        raise AudioError(f"{label} has {info.channels} channels, over the limit of {limits.max_channels}: "
                         "downmix it to mono")
    if info.frames <= 0:
        raise AudioError(f"{label} has no audio samples: send a non-empty recording")
    if max_seconds is not None and info.seconds > max_seconds:
        raise _seconds_error(label, info.seconds, max_seconds)
    if info.frames * info.channels > limits.max_samples:
        raise _budget_error(label, info.frames, info, limits)


def probe_audio(
    src: AudioSource,
    *,
    limits: AudioLimits = AudioLimits(),
    max_seconds: float | None = None,
    name: str | None = None,
) -> AudioInfo:
    """Read ``src``'s header only and check it against ``limits`` and ``max_seconds``.

    Raises AudioError for a missing or empty file, an unknown format, a sample rate outside the
    limits, too many channels, no frames, a clip longer than ``max_seconds``, or more than
    ``limits.max_samples`` samples to decode. A file object is left rewound to 0.
    """
    label = _label(src, name)
    with _open(src, label) as source:
        info = source.info
    if not isinstance(src, (str, Path, bytes, bytearray)):
        src.seek(0)
    _check(info, limits, max_seconds, label)
    return info


def _decode(blocks: Iterator[np.ndarray], info: AudioInfo, sample_rate: int, limits: AudioLimits,
            max_seconds: float | None, label: str, divisor: float | None) -> tuple[np.ndarray, float]:
    """One pass over ``blocks``: (n, channels) -> mono (/ divisor) -> 16 kHz; returns (samples, peak of the mono input)."""
    stream = None
    if info.sample_rate != sample_rate:
        stream = soxr.ResampleStream(info.sample_rate, sample_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
    # the header's frame count sizes the output once; a header that lies low only costs regrowth
    out = np.empty(int(np.ceil(info.frames * sample_rate / info.sample_rate)) + 16, dtype=np.float32)
    filled = 0
    decoded = 0
    peak = 0.0

    def put(y: np.ndarray) -> None:
        nonlocal out, filled
        if filled + y.size > out.size:
            grown = np.empty(max(2 * out.size, filled + y.size), dtype=np.float32)
            grown[:filled] = out[:filled]
            out = grown
        out[filled: filled + y.size] = y
        filled += y.size

    for got in blocks:
        decoded += len(got)
        # the header was checked, but a lying one must not get past the budget either
        if decoded * info.channels > limits.max_samples:
            raise _budget_error(label, decoded, info, limits, at_least=True)
        if max_seconds is not None and decoded / info.sample_rate > max_seconds:
            raise _seconds_error(label, decoded / info.sample_rate, max_seconds)
        if info.channels == 1:
            mono = got[:, 0]
        else:
            # a float64 mean cannot overflow, whatever finite float32 samples the channels hold
            mono = got.mean(axis=1, dtype=np.float64).astype(np.float32)
        if not np.isfinite(mono).all():
            raise AudioError(f"{label} contains NaN or infinite samples: re-encode the audio")
        peak = max(peak, float(np.abs(mono).max()))
        if divisor is not None:
            mono = mono / np.float32(divisor)
        put(mono if stream is None else stream.resample_chunk(np.ascontiguousarray(mono)))
    if decoded == 0:
        raise AudioError(f"{label} has no audio samples: send a non-empty recording")
    if stream is not None:
        put(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    if filled == 0:  # a clip of a few samples downsampled to less than one sample: keep one
        put(np.zeros(1, dtype=np.float32))
    return (out[:filled] if out.size - filled < 4096 else out[:filled].copy()), peak


def load_audio(
    src: AudioSource | np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    name: str | None = None,
    limits: AudioLimits | None = None,
) -> np.ndarray:
    """Decode ``src`` to (S,) float32 mono at ``sample_rate``.

    ``src``: encoded bytes, a file path, a seekable binary file object (rewound to 0 first), or an
    already-decoded (S,) array at ``sample_rate`` (checked and peak-normalised, never resampled).
    Encoded audio's header is checked first, as ``probe_audio`` checks it (``limits`` defaults to
    ``AudioLimits()``), then it is decoded in blocks of about a second.

    Raises AudioError for a missing, empty or undecodable file, a header outside ``limits``, no
    samples, NaN/inf samples, or a clip longer than ``max_seconds``.
    """
    label = _label(src, name)
    if isinstance(src, np.ndarray):
        return _check_array(src, sample_rate, max_seconds, label)
    limits = limits or AudioLimits()
    with _open(src, label) as source:
        info = source.info
        _check(info, limits, max_seconds, label)
        out, peak = _decode(source.blocks(), info, sample_rate, limits, max_seconds, label, divisor=None)
        if peak > 1.0:  # over-range float audio: redo the pass, normalised before resampling
            del out
            out, _ = _decode(source.blocks(), info, sample_rate, limits, max_seconds, label, divisor=peak)
    return out


def _check_array(src: np.ndarray, sample_rate: int, max_seconds: float | None, label: str) -> np.ndarray:
    data = src.astype(np.float32, copy=False)
    if data.ndim != 1:
        raise AudioError(f"{label} must be mono (S,) samples, got shape {tuple(data.shape)}")
    if data.size == 0:
        raise AudioError(f"{label} has no audio samples: send a non-empty recording")
    if not np.isfinite(data).all():
        raise AudioError(f"{label} contains NaN or infinite samples: re-encode the audio")
    if max_seconds is not None and data.size / sample_rate > max_seconds:
        raise _seconds_error(label, data.size / sample_rate, max_seconds)
    peak = float(np.abs(data).max())
    return data / np.float32(peak) if peak > 1.0 else data


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, fmin: float = 0.0, fmax: float | None = None):
    """Triangular mel filters with area normalisation, (n_mels, n_fft // 2 + 1) float32."""
    fmax = fmax or sample_rate / 2
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lower) / (center - lower)
    down = (upper - freqs[None, :]) / (upper - center)
    fb = np.maximum(0.0, np.minimum(up, down)) * (2.0 / (upper - lower))
    return torch.from_numpy(fb.astype(np.float32))


@dataclass(frozen=True)
class FeatureSettings:
    """Stored in speechllm.json so a model dir always gets the features it was trained on."""

    sample_rate: int = SAMPLE_RATE
    n_mels: int = 80
    n_fft: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms -> 100 frames/s

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class LogMel:
    """Whisper-style log-mel: log10 power mel, floored 8 (log10 units) below each clip's max, scaled.

    __call__(list of (S_i,) arrays) -> (features (B, n_mels, T_max) float32, lengths (B,) int64),
    T_i = max(1, S_i // hop_length); padded frames are 0.
    """

    def __init__(self, settings: FeatureSettings | None = None):
        self.settings = settings or FeatureSettings()
        s = self.settings
        self.window = torch.hann_window(s.n_fft)
        self.filters = mel_filterbank(s.n_mels, s.n_fft, s.sample_rate)

    def frames(self, n_samples: int) -> int:
        return max(1, n_samples // self.settings.hop_length)

    def one(self, wav: np.ndarray | torch.Tensor) -> torch.Tensor:
        s = self.settings
        x = torch.as_tensor(wav, dtype=torch.float32)
        n = x.numel()
        if n < s.n_fft:
            # stft's centring reflects n_fft // 2 samples at each end, which a very short clip does not
            # have; zeros after the clip are the silence its frames would see in a recording that stopped
            x = F.pad(x, (0, s.n_fft - n))
        spec = torch.stft(x, s.n_fft, s.hop_length, window=self.window, return_complex=True)
        power = spec[:, : self.frames(n)].abs() ** 2
        mel = torch.log10(torch.clamp(self.filters @ power, min=1e-10))
        mel = torch.maximum(mel, mel.max() - 8.0)
        return (mel + 4.0) / 4.0

    def __call__(self, wavs: list) -> tuple[torch.Tensor, torch.Tensor]:
        feats = [self.one(w) for w in wavs]
        lengths = torch.tensor([f.shape[1] for f in feats], dtype=torch.long)
        out = torch.zeros(len(feats), self.settings.n_mels, int(lengths.max()))
        for i, f in enumerate(feats):
            out[i, :, : f.shape[1]] = f
        return out, lengths
