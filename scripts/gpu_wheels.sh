#!/usr/bin/env bash
# Download, here (with PyPI), the small wheels scripts/gpu_check.sh needs on a GPU machine without network
# whose Python already has torch, transformers and peft. Into .whl/ (ignored by git); about 20 MB.
#   bash scripts/gpu_wheels.sh [PYTHON_VERSION]     # default 3.12
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
# what the server, the gpu tests and the load test import beyond torch/transformers/peft/numpy
PKGS=(soundfile soxr silero-vad fastapi starlette pydantic-settings python-dotenv uvicorn h11 python-multipart
      prometheus-client httpx httpcore anyio sniffio jiwer rapidfuzz sacrebleu portalocker tabulate colorama lxml
      openai distro jiter pytest pytest-timeout pluggy iniconfig pyyaml matplotlib)
mkdir -p .whl
platforms=()
for n in 17 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
for p in "${PKGS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl "$p" \
    || python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" -d .whl "$p"
done
du -sh .whl
