#!/usr/bin/env bash
# Benchmark latency under load, pruned vs base, in one command: start `slimspeech serve` with both
# models on 127.0.0.1, run a short `slimspeech loadtest` (open + closed loop, the two models
# interleaved), write the report (markdown, JSON, plots), stop the server.
#
# Usage: bash scripts/loadtest_demo.sh [PRUNED_DIR [BASE_DIR]]
#   default models: the demo model's pruned export and the demo model (speechllm/assets/demo-pruned,
#   speechllm/assets/demo), served as "pruned" and "base".
# Environment (all optional):
#   OUT=runs/loadtest   report folder          DATA=MANIFEST  clips (default: 8 sentences spoken now by espeak-ng)
#   RATES=1,2,4         open-loop req/s/model  CONCURRENCY=1,4  closed-loop requests in flight per model
#   DURATION=10         seconds per level and model            STREAM=1  stream (SSE, measures TTFT); 0: off
#   TASK=transcribe     e.g. transcribe,translate:fr           THREADS=N  torch threads of the server
#   PORT=free port      READY_TIMEOUT=300 s to wait for the models to load
set -euo pipefail
cd "$(dirname "$0")/.."
PRUNED=${1:-speechllm/assets/demo-pruned}
BASE=${2:-speechllm/assets/demo}
OUT=${OUT:-runs/loadtest}
RATES=${RATES-1,2,4}
CONCURRENCY=${CONCURRENCY-1,4}
DURATION=${DURATION:-10}
STREAM=${STREAM:-1}
TASK=${TASK:-transcribe}
READY_TIMEOUT=${READY_TIMEOUT:-300}
PY=.venv/bin/python
SLIM=.venv/bin/slimspeech
for dir in "$PRUNED" "$BASE"; do
  if [ ! -f "$dir/speechllm.json" ]; then
    echo "error: $dir is not a model dir (no speechllm.json): pass PRUNED_DIR BASE_DIR" \
         "(e.g. runs/export runs/base), or train and export the demo model first" >&2
    exit 2
  fi
done
PORT=${PORT:-$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
URL="http://127.0.0.1:$PORT"

work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${DATA:-}" ]; then  # a few fresh sentences, 16 kHz mono, and their manifest
  DATA="$work/clips.jsonl"
  i=0
  while IFS= read -r sentence; do
    i=$((i + 1))
    espeak-ng -v en-us -s 150 -w "$work/raw$i.wav" "$sentence"
    sox "$work/raw$i.wav" -r 16000 -c 1 "$work/clip$i.wav"
    printf '%s\t%s\n' "clip$i.wav" "$sentence" >> "$work/texts.tsv"
  done <<'TEXT'
the old teacher will not clean the new books
does the small dog sleep in the garden
three cats sleep in the garden
the red ball is next to the green chair
my friend reads a long story every evening
the children do not like the cold rain
a tall man opens the door of the house
we will see the big river tomorrow
TEXT
  "$PY" - "$work" <<'EOF'
import json, sys
from pathlib import Path
import soundfile as sf
work = Path(sys.argv[1])
with open(work / "clips.jsonl", "w") as out:
    for line in (work / "texts.tsv").read_text().splitlines():
        name, text = line.split("\t")
        info = sf.info(str(work / name))
        out.write(json.dumps({"id": Path(name).stem, "audio": name, "duration": info.frames / info.samplerate,
                              "text": text}) + "\n")
EOF
fi

threads=()
if [ -n "${THREADS:-}" ]; then
  threads=(--threads "$THREADS")
  export OMP_NUM_THREADS="$THREADS"
fi
echo "starting slimspeech serve on $URL: pruned=$PRUNED base=$BASE"
"$SLIM" serve --model "pruned=$PRUNED" --model "base=$BASE" --host 127.0.0.1 --port "$PORT" \
  --log-level warning "${threads[@]}" > "$work/server.log" 2>&1 &
server=$!
if ! "$PY" - "$URL" "$READY_TIMEOUT" "$server" <<'EOF'
import os, sys, time, urllib.request
url, timeout, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("the server exited")
    try:
        with urllib.request.urlopen(url + "/ready", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.25)
sys.exit(f"the server was not ready after {timeout:g} s")
EOF
then
  echo "error: server did not become ready; its log:" >&2
  tail -20 "$work/server.log" >&2
  exit 1
fi

stream=()
[ "$STREAM" = "1" ] && stream=(--stream)
"$SLIM" loadtest --url "$URL" --models pruned,base --data "$DATA" --rates "$RATES" \
  --concurrency "$CONCURRENCY" --duration-s "$DURATION" --task "$TASK" "${stream[@]}" --out "$OUT"
