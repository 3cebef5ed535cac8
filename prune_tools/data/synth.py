"""Speech for the synthetic benchmark: espeak-ng voices, sox conversion, additive noise.

``synthesize`` runs ``espeak-ng`` (text on stdin, WAV to a temporary file) and
converts with ``sox`` to 16 kHz mono 16-bit FLAC. ``add_noise`` mixes coloured
noise (white, pink, brown) at a given SNR measured against the active speech.
Both are deterministic: espeak-ng is, sox runs in repeatable mode without
dither, and the noise comes only from the numpy Generator you pass.

Voices are espeak-ng voice names, optionally with a ``+variant``. Caution:
``en-gb+VARIANT`` silently falls back to the plain default voice on espeak-ng
1.51, so variants are only attached to voices checked to honour them
(``tests/prune_tools/test_make_data.py`` checks every voice sounds different).

Run ``python -m prune_tools.data.synth "some text" out.flac [VOICE]`` to try one.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = [
    "SAMPLE_RATE", "TRAIN_VOICES", "UNSEEN_VOICES", "SPEED_RANGE", "PITCH_RANGE", "SynthError",
    "require_tools", "tool_versions", "synthesize", "add_noise", "read_audio", "write_audio",
]

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
# English accents (espeak-ng --voices=en) and male/female variants, all checked to differ.
TRAIN_VOICES = (
    "en-us",
    "en-gb",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en-gb-x-gbclan",
    "en-us-nyc",
    "en-us+f3",
    "en+m3",
    "en-gb-x-rp+f2",
    "en-029+m2",
    "en-gb-scotland+f4",
)
# Never used by train, dev, test-clean or test-noisy: an unseen accent (West Midlands) and variants.
UNSEEN_VOICES = (
    "en-gb-x-gbcwmd",
    "en-gb-x-gbcwmd+f4",
    "en-us+m7",
)
SPEED_RANGE = (130, 190)  # words per minute
PITCH_RANGE = (30, 70)  # espeak-ng pitch 0..99

_INSTALL_HINT = "install them: apt-get install -y espeak-ng sox"


class SynthError(RuntimeError):
    """espeak-ng or sox is missing or failed."""


def require_tools() -> None:
    """Raise SynthError naming the missing tools and how to install them."""
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        raise SynthError(f"{' and '.join(missing)} not found on PATH; {_INSTALL_HINT}")


def tool_versions() -> dict[str, str]:
    """Versions of espeak-ng and sox, for provenance (empty strings when unknown)."""
    out = {}
    for tool, args in (("espeak-ng", ["--version"]), ("sox", ["--version"])):
        try:
            res = subprocess.run([tool, *args], capture_output=True, text=True, timeout=10)
            out[tool] = (res.stdout or res.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            out[tool] = ""
    return out


def synthesize(text: str, voice: str, speed: int, pitch: int, out_path: str | os.PathLike) -> float:
    """Speak ``text`` with espeak-ng and write 16 kHz mono 16-bit FLAC to ``out_path``.

    Returns the duration in seconds. Raises SynthError if a tool is missing or fails.
    """
    require_tools()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".wav", dir=out_path.parent)
    os.close(fd)
    try:
        _run(["espeak-ng", "-v", voice, "-s", str(int(speed)), "-p", str(int(pitch)), "-w", tmp],
             stdin=text)
        # -R: repeatable, -D: no dither, so the same input always gives the same bytes
        _run(["sox", "-R", "-D", tmp, "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(out_path)])
    finally:
        Path(tmp).unlink(missing_ok=True)
    info = sf.info(str(out_path))
    return info.frames / info.samplerate


def _run(cmd: list[str], stdin: str | None = None) -> None:
    try:
        res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as e:
        raise SynthError(f"{cmd[0]} not found on PATH; {_INSTALL_HINT}") from e
    except subprocess.TimeoutExpired as e:
        raise SynthError(f"{cmd[0]} timed out after 120 s on {cmd!r}") from e
    # espeak-ng exits 0 even for some problems but says so on stderr; an unknown voice exits 1
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().splitlines()
        raise SynthError(f"{cmd[0]} failed (exit {res.returncode}): {msg[-1] if msg else ''}; command: {cmd!r}")


def read_audio(path: str | os.PathLike) -> np.ndarray:
    """Mono float32 samples in [-1, 1]; shape (T,)."""
    x, _ = sf.read(str(path), dtype="float32", always_2d=False)
    return x if x.ndim == 1 else x.mean(axis=1)


def write_audio(path: str | os.PathLike, samples: np.ndarray) -> float:
    """Write (T,) float samples as 16 kHz mono 16-bit FLAC; returns the duration in seconds."""
    sf.write(str(path), np.clip(samples, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="FLAC")
    return len(samples) / SAMPLE_RATE


def _colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown); shape (n,)."""
    white = rng.standard_normal(n)
    if exponent == 0:
        noise = white
    else:
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n)
        f[0] = f[1] if n > 1 else 1.0
        noise = np.fft.irfft(spec / f ** (exponent / 2), n)
    noise = noise - noise.mean()
    rms = np.sqrt(np.mean(noise**2))
    return noise / rms if rms > 0 else noise


def _speech_rms(x: np.ndarray, frame: int = 320) -> float:
    """RMS over the active (non-silent) 20 ms frames, so the SNR refers to the speech itself."""
    n = len(x) // frame
    if n == 0:
        return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    frames = x[: n * frame].reshape(n, frame)
    e = np.sqrt(np.mean(frames**2, axis=1))
    active = e[e > 0.1 * e.max()] if e.max() > 0 else e
    return float(np.sqrt(np.mean(active**2)))


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(np.sqrt(np.mean(x**2)), 1e-12)


def colored_noise_mix(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white/pink/brown noise in random (Dirichlet) proportions, shape (n,)."""
    weights = rng.dirichlet([1.0, 1.0, 1.0])
    return _unit_rms(sum(w * _colored_noise(n, e, rng) for w, e in zip(weights, (0.0, 1.0, 2.0))))


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator,
              noise: np.ndarray | None = None) -> np.ndarray:
    """Mix white/pink/brown noise (random proportions) into ``samples`` (T,) at ``snr_db``.

    The SNR is measured against the RMS of the active speech frames. The result is
    rescaled only if it would clip. Deterministic given the rng state. ``noise``: a (T,) noise
    to use instead of a fresh mix (training draws crops of a precomputed bank: faster).
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return x.astype(np.float32)
    noise = colored_noise_mix(len(x), rng) if noise is None else _unit_rms(noise)
    target = _speech_rms(x) / (10 ** (snr_db / 20))
    y = x + target * noise
    peak = np.max(np.abs(y))
    if peak > 0.99:
        y *= 0.99 / peak
    return y.astype(np.float32)


if __name__ == "__main__":  # pragma: no cover - manual tool
    logging.basicConfig(level=logging.INFO)
    if len(sys.argv) < 3:
        print("usage: python -m prune_tools.data.synth TEXT OUT.flac [VOICE]", file=sys.stderr)
        raise SystemExit(2)
    d = synthesize(sys.argv[1], sys.argv[3] if len(sys.argv) > 3 else TRAIN_VOICES[0], 160, 50, sys.argv[2])
    print(f"{sys.argv[2]}: {d:.2f} s")
