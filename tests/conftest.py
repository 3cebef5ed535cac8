"""Shared fixtures: tiny models built with the production builders, real audio files."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

# Two cores, and tests that start servers or torchrun workers: oversubscribed BLAS threads make tiny
# models ~100x slower. Child processes inherit the environment.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


#: the checkout's root
ROOT = Path(__file__).resolve().parents[1]


def python_stdout(code: str) -> str:
    """What ``python -c code`` prints (stripped), run in a fresh interpreter from the checkout's root:
    for checks on what an import loads, which the test process itself has loaded already."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout.strip()


def load_script(path: Path):
    """A script that is not a package module (``scripts/*.py``, ``deploy/grafana/dashboard.py``), imported by path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def file_imports(path: Path) -> set[str]:
    """Top-level packages a source file imports (absolute imports only)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


#: CI sets SLIMSPEECH_STRICT=1: there a missing tool or extra fails its tests instead of skipping them
STRICT = os.environ.get("SLIMSPEECH_STRICT") == "1"


def require(ok: bool, what: str, fix: str) -> None:
    """Skip the test (fail it under SLIMSPEECH_STRICT=1) when ``ok`` is false, naming what and the fix."""
    if not ok:
        message = f"{what} is not installed ({fix})"
        if STRICT:
            pytest.fail(f"SLIMSPEECH_STRICT=1 but {message}")
        pytest.skip(message)


def require_tools(*names: str, fix: str) -> None:
    missing = [n for n in names if not shutil.which(n)]
    require(not missing, " and ".join(missing), fix)


def engine_batches_like_one_by_one(path, clips, tasks, scheduler: str = "continuous") -> None:
    """The torch engine (max batch 8, ``scheduler``) on clip i with task ``tasks[i % len(tasks)]``, all submitted
    at once: the texts equal speechllm's one clip at a time, and some clips ran in a batch together."""
    import asyncio

    from server.engines import EngineRequest
    from server.engines.torch_engine import TorchEngine
    from server.settings import Settings
    from speechllm.generate import transcribe
    from speechllm.modeldir import load_model

    task_of = [tasks[i % len(tasks)] for i in range(len(clips))]

    async def run():
        engine = TorchEngine(Settings(models={"m": str(path)}, max_batch_size=8, max_wait_ms=200, scheduler=scheduler),
                             {"m": path})
        await engine.start()
        handles = [engine.submit(EngineRequest("m", task, c)) for task, c in zip(task_of, clips)]
        results = [await h.result() for h in handles]
        await engine.stop()
        return results

    results = asyncio.run(run())
    model = load_model(path)
    assert [r.text for r in results] == [transcribe(model, [c], [t])[0] for t, c in zip(task_of, clips)]
    assert max(r.batch_size for r in results) > 1


def run_slimspeech(*argv) -> subprocess.CompletedProcess:
    """``slimspeech *argv`` in this process (the quick tier's way to run a verb: no interpreter start-up); -> its
    exit code and what it printed, as a CompletedProcess. tests/test_bring_your_own.py runs the console script."""
    import contextlib
    import io

    from speechllm import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return subprocess.CompletedProcess(["slimspeech", *map(str, argv)], rc, out.getvalue(), err.getvalue())


def assert_refused(capsys, argv, want: str, out) -> None:
    """``slimspeech *argv`` in this process is refused: exit code 2, nothing on stdout, one ``error: `` line on
    stderr holding ``want``, and ``out`` not written."""
    from speechllm import cli

    rc = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2 and captured.out == "" and not os.path.exists(out), (rc, captured)
    assert len(lines) == 1 and lines[0].startswith("error: ") and want in lines[0], captured.err


def espeak_wav(text: str, path, voice: str = "en-us", speed: int = 160) -> str:
    """Real speech from espeak-ng, resampled to 16 kHz by sox."""
    raw = str(path) + ".raw.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", raw, text], check=True)
    subprocess.run(["sox", raw, "-r", "16000", "-c", "1", str(path)], check=True)
    return str(path)


@pytest.fixture(scope="session")
def speech_files(tmp_path_factory):
    require_tools("espeak-ng", "sox", fix="apt-get install espeak-ng sox; scripts/setup.sh does")
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


#: what tests/conftest.py speech_files say, and made-up translations, for manifests of those clips
TEXTS = ["the small dog sees the red ball", "three cats sleep in the garden", "hello"]
FR = ["le petit chien voit la balle rouge", "trois chats dorment dans le jardin", "bonjour"]
DE = ["der kleine Hund sieht den roten Ball", "drei Katzen schlafen im Garten", "hallo"]


def make_manifest(path, audio_files, texts=TEXTS):
    """A JSONL manifest over ``audio_files`` with made-up translations (the manifest module's format)."""
    with open(path, "w") as f:
        for i, (a, t) in enumerate(zip(audio_files, texts)):
            f.write(json.dumps({"id": f"u{i}", "audio": str(a), "duration": 1.0, "text": t,
                                "translation": {"fr": FR[i % 3], "de": DE[i % 3]}, "voice": "en-us",
                                "speed": 160, "pitch": 50, "snr": None}) + "\n")
    return str(path)


#: what browsers record and phones send, as encode_audio makes it: container, codec, its sample rate, muxer options
BROWSER_FORMATS = {
    "webm": ("webm", "libopus", 48000, {"live": "1"}),  # Chrome's and Firefox's MediaRecorder: no duration, no cues
    "ogg": ("ogg", "libopus", 48000, {}),  # Firefox's ogg/opus
    "m4a": ("ipod", "aac", 44100, {}),  # Safari's mp4/aac (the m4a brand)
    "mp3": ("mp3", "libmp3lame", 44100, {}),
}


def encode_audio(samples: np.ndarray, sr: int, kind: str) -> bytes:
    """(S,) or (S, C) float samples -> a file of ``kind`` (BROWSER_FORMATS), encoded by PyAV (FFmpeg)."""
    import io

    import av

    fmt, codec, rate, options = BROWSER_FORMATS[kind]
    x = np.asarray(samples, dtype=np.float32)
    x = x[:, None] if x.ndim == 1 else x
    layout = "mono" if x.shape[1] == 1 else "stereo"
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt, options=options) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.reshape(1, -1)), format="flt", layout=layout)
        frame.sample_rate = sr
        convert = av.AudioResampler(format=stream.codec_context.format.name, layout=layout, rate=rate)
        for f in convert.resample(frame) + convert.resample(None):
            out.mux(stream.encode(f))
        out.mux(stream.encode(None))
    return buf.getvalue()
