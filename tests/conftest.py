"""Shared fixtures: tiny models built with the production builders, real audio files."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

# Two cores, and tests that start servers or torchrun workers: oversubscribed BLAS threads make tiny
# models ~100x slower. Child processes inherit the environment.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def espeak_wav(text: str, path, voice: str = "en-us", speed: int = 160) -> str:
    """Real speech from espeak-ng, resampled to 16 kHz by sox."""
    raw = str(path) + ".raw.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", raw, text], check=True)
    subprocess.run(["sox", raw, "-r", "16000", "-c", "1", str(path)], check=True)
    return str(path)


@pytest.fixture(scope="session")
def speech_files(tmp_path_factory):
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.fail("espeak-ng and sox are required: apt-get install -y espeak-ng sox")
    d = tmp_path_factory.mktemp("speech")
    texts = ["the small dog sees the red ball", "three cats sleep in the garden", "hello"]
    return [espeak_wav(t, d / f"s{i}.wav") for i, t in enumerate(texts)]


@pytest.fixture(scope="session")
def noise_wavs():
    rng = np.random.default_rng(0)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 7000, 11000, 3000)]


@pytest.fixture(scope="session")
def tiny_slam_dir(tmp_path_factory):
    from speechllm.builders import tiny_slam

    path = tmp_path_factory.mktemp("models") / "tiny-slam"
    tiny_slam("llama").save(path, provenance={"built_by": "tests"})
    return path


def write_wav(path, samples, sr=16000):
    sf.write(str(path), samples, sr)
    return str(path)
