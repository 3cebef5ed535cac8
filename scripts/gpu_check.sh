#!/usr/bin/env bash
# The GPU checks in one run (about 5 minutes): the gpu test tier, then a short load test of the demo models
# on CUDA; writes docs/gpu.md (device, versions, figures, date).
#
#   bash scripts/gpu_check.sh                 # on a machine with an NVIDIA GPU
#
# It runs from source on the machine's own CUDA torch (it never installs torch: the pin in
# pyproject.toml is for installs, not for this check), so it works on a GPU machine without network
# whose Python has torch + transformers + peft. Anything else it needs is small and pure-Python or a
# small wheel: `bash scripts/gpu_wheels.sh` (here, with PyPI) downloads them into .whl/ for that
# machine's Python, and this script installs .whl/*.whl into a private folder first when it exists.
# The vLLM checks run where vLLM is installed, and are skipped (said in docs/gpu.md) where it is not.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT_DIR:-runs/gpu-check}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/slimspeech-site .whl/*.whl \
    || { echo "error: installing .whl/*.whl failed" >&2; exit 2; }
  export PYTHONPATH="/tmp/slimspeech-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: torch sees no CUDA device here: run this on a GPU machine (docs/gpu.md keeps its last result)" >&2
  exit 2
fi
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
rm -f gpu-figures.jsonl
# 1. the gpu tier (each test appends its figures to gpu-figures.jsonl)
timeout 360 "$PY" -m pytest -q -m gpu tests/gpu -p no:cacheprovider -s -W ignore::DeprecationWarning \
  > "$OUT/pytest.log" 2>&1
tests_rc=$?
tail -3 "$OUT/pytest.log"
# 2. a short load test: the demo models served on CUDA, 1 and 8 concurrent clients for 15 s each
load_rc=skipped
if command -v espeak-ng > /dev/null && command -v sox > /dev/null; then
  "$PY" - "$OUT" <<'PY'
import json, subprocess, sys
from pathlib import Path
out = Path(sys.argv[1]) / "clips"
out.mkdir(parents=True, exist_ok=True)
texts = ["the small dog sees the red ball", "three cats sleep in the garden", "a proud musician fed a frog",
         "will this pretty gift be on three new white towers"]
rows = []
for i, t in enumerate(texts):
    raw, wav = out / f"{i}.raw.wav", out / f"{i}.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), t], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", str(wav)], check=True)
    rows.append({"id": f"c{i}", "audio": str(wav.resolve()), "text": t, "translation": {}})
(out / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
PY
  port=18000
  "$PY" -m speechllm.cli serve --device cuda --port $port --log-level warning > "$OUT/server.log" 2>&1 &
  server=$!
  for _ in $(seq 120); do curl -sf "localhost:$port/ready" > /dev/null && break; sleep 1; done
  timeout 150 "$PY" -m speechllm.cli loadtest --url "http://127.0.0.1:$port" --models demo-pruned,demo \
    --data "$OUT/clips/clips.jsonl" --concurrency 1,8 --duration-s 15 --out "$OUT/loadtest" > "$OUT/loadtest.log" 2>&1
  load_rc=$?
  kill $server; wait $server 2> /dev/null
fi
"$PY" - "$OUT" "$started" "$tests_rc" "$load_rc" <<'PY'
import json, platform, sys
from pathlib import Path
import torch, transformers
out, started, tests_rc, load_rc = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
try:
    import vllm
    vllm_version = vllm.__version__
except Exception:  # noqa: BLE001
    vllm_version = "not installed (its checks were skipped)"
figures = [json.loads(l) for l in Path("gpu-figures.jsonl").read_text().splitlines()] \
    if Path("gpu-figures.jsonl").exists() else []
summary = (out / "pytest.log").read_text().strip().splitlines()[-1:]
lines = ["# GPU checks", "",
         f"Run by `scripts/gpu_check.sh` on {started}. Device: {torch.cuda.get_device_name(0)}; "
         f"Python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
         f"transformers {transformers.__version__}, vLLM {vllm_version}.", "",
         f"`pytest -m gpu tests/gpu` (exit {tests_rc}): {summary[0] if summary else 'no output'}", "",
         "| check | figures |", "| --- | --- |"]
lines += [f"| {f.pop('check')} | {', '.join(f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}' for k, v in f.items())} |"
          for f in figures]
report = out / "loadtest" / "report.md"
lines += ["", f"Load test (demo-pruned vs demo on CUDA, concurrency 1 and 8, 15 s each; exit {load_rc}):", ""]
lines += report.read_text().splitlines() if report.exists() else ["not run (needs espeak-ng and sox for its clips)"]
Path("docs/gpu.md").write_text("\n".join(lines) + "\n")
print("wrote docs/gpu.md")
PY
[ "$tests_rc" = 0 ]
