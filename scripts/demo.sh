#!/usr/bin/env bash
# The main job on the embedded demo model: speak two fresh benchmark sentences with espeak-ng,
# then transcribe them and translate them into French and German with one shared backbone.
# Usage: bash scripts/demo.sh   (after bash scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
i=0
while IFS= read -r sentence; do
  i=$((i + 1))
  espeak-ng -v en-us -s 150 -w "$out/raw$i.wav" "$sentence"
  sox "$out/raw$i.wav" -r 16000 -c 1 "$out/clip$i.wav"
  echo "spoken:     $sentence"
done <<'TEXT'
the old teacher will not clean the new books
does the small dog sleep in the garden?
TEXT
echo "--- transcribe";      .venv/bin/slimspeech transcribe "$out"/clip*.wav
echo "--- translate -> fr"; .venv/bin/slimspeech transcribe --task translate --target-lang fr "$out"/clip*.wav
echo "--- translate -> de"; .venv/bin/slimspeech transcribe --task translate --target-lang de "$out"/clip*.wav
