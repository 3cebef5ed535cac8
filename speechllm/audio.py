"""Audio input: any soundfile-readable bytes or path -> 16 kHz mono float32, and log-mel features.

    from speechllm.audio import load_audio, LogMel
    wav = load_audio("clip.flac")                    # (S,) float32 in [-1, 1], 16 kHz
    feats, lengths = LogMel()([wav, wav[:8000]])     # (B, n_mels, T) float32, (B,) frames

Resampling is polyphase with an anti-aliasing FIR (scipy.signal.resample_poly).
Features are computed per clip and padded to the longest clip of the batch only,
so batching never changes a clip's features and short clips are not padded to 30 s.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from scipy.signal import resample_poly

from .errors import AudioError

SAMPLE_RATE = 16000


def resample(samples: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase, anti-aliased resampling of a (S,) float array."""
    if sr_in == sr_out:
        return samples.astype(np.float32, copy=False)
    ratio = Fraction(sr_out, sr_in)
    out = resample_poly(samples.astype(np.float64), ratio.numerator, ratio.denominator)
    return out.astype(np.float32)


def load_audio(
    src: bytes | bytearray | str | Path | np.ndarray,
    *,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decode ``src`` (encoded bytes, a file path, or an already-decoded 16 kHz array) to (S,) float32 mono.

    Raises AudioError for a missing file, undecodable data, no samples, NaN/inf, or a clip
    longer than ``max_seconds``.
    """
    label = name or (str(src) if isinstance(src, (str, Path)) else "audio data")
    if isinstance(src, np.ndarray):
        data, sr = src.astype(np.float32, copy=False), sample_rate
    else:
        if isinstance(src, (str, Path)):
            path = Path(src)
            if not path.is_file():
                raise AudioError(f"audio file not found: {path} (check the path)")
            handle = str(path)
        else:
            if len(src) == 0:
                raise AudioError(f"{label} is empty (0 bytes): send a wav, flac or ogg file")
            handle = io.BytesIO(bytes(src))
        try:
            info = sf.info(handle)
            if max_seconds is not None and info.duration > max_seconds:  # refuse before decoding it all
                raise AudioError(f"{label} is {info.duration:.1f} s long, over the {max_seconds:.0f} s limit: "
                                 "split it into shorter clips")
            if not isinstance(handle, str):
                handle.seek(0)
            data, sr = sf.read(handle, dtype="float32", always_2d=True)
        except AudioError:
            raise
        except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError
            reason = getattr(exc, "error_string", None) or type(exc).__name__
            raise AudioError(f"cannot decode {label} ({reason}): send a wav, flac or ogg file") from None
        data = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if data.ndim != 1:
        raise AudioError(f"{label} must be mono (S,) samples, got shape {tuple(data.shape)}")
    if data.size == 0:
        raise AudioError(f"{label} has no audio samples: send a non-empty recording")
    if not np.isfinite(data).all():
        raise AudioError(f"{label} contains NaN or infinite samples: re-encode the audio")
    seconds = data.size / sr
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(
            f"{label} is {seconds:.1f} s long, over the {max_seconds:.0f} s limit: split it into shorter clips"
        )
    return resample(data, sr, sample_rate)


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
    T_i = S_i // hop_length; padded frames are 0.
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
        spec = torch.stft(x, s.n_fft, s.hop_length, window=self.window, return_complex=True)
        power = spec[:, : self.frames(x.numel())].abs() ** 2
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


def duration_seconds(wav: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    return float(wav.shape[0]) / sample_rate


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
