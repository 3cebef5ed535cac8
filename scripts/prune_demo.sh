#!/usr/bin/env bash
# The paper's pipeline on the embedded demo model, in one command:
#   sweep: analyze (speech and text inputs; transcribe, translate:fr, translate:de) -> at each fraction
#          prune the best contiguous block, heal (LoRA + projector), evaluate vs the unpruned model
#          -> the largest fraction within the 0.25 relative-WER tolerance -> healing ablation there;
#   export the healed backbone at that fraction (its scores in its provenance) to runs/; copy the
#   small outputs (JSON, CSV, PNG, markdown) to docs/demo. Shipping it as the demo's pruned export is
#   a deliberate release: python scripts/release_demo.py --pruned runs/prune-demo/export
# Usage: bash scripts/prune_demo.sh            (env: DATA, OUT, DOCS, FRACTIONS, HEAL_STEPS, EVAL_LIMIT, EXPORT,
#        SEEDS: healing runs per fraction, default 1; SEEDS=3 on an existing sweep dir adds runs 1 and 2 and
#        chooses the fraction by the 95% interval's upper bound)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data/bench}
OUT=${OUT:-runs/prune-demo}
DOCS=${DOCS:-docs/demo}
EXPORT=${EXPORT:-$OUT/export}
S=.venv/bin/slimspeech
M=speechllm/assets/demo
[ -f "$DATA/train.jsonl" ] || $S make-data --out "$DATA"
$S sweep --model "$M" --data "$DATA/train.jsonl" --analysis-data "$DATA/dev.jsonl" --analysis-limit 200 \
  --eval-data "$DATA/test-clean.jsonl" "$DATA/test-noisy.jsonl" "$DATA/test-unseen-voice.jsonl" \
  --fractions "${FRACTIONS:-0.17,0.25,0.33,0.42,0.5}" --heal-steps "${HEAL_STEPS:-200}" \
  --eval-limit "${EVAL_LIMIT:-300}" --seeds "${SEEDS:-1}" --out "$OUT/sweep"
F=$(.venv/bin/python - "$OUT/sweep/sweep.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
f = s["max_fraction_transcribe"]
print(f"{(f if f is not None else min(p['fraction'] for p in s['points'])):.2f}")
PY
)
$S export --model "$OUT/sweep/f$F/healed" --eval "$OUT/sweep/f$F/eval.json" --out "$EXPORT" \
  --note "demo backbone pruned by scripts/prune_demo.sh at fraction $F"
mkdir -p "$DOCS"
( cd "$OUT/sweep" && find . -maxdepth 2 \( -name '*.json' -o -name '*.md' -o -name '*.png' -o -name '*.csv' \) \
    ! -name 'ckpt*' -print0 | xargs -0 -I{} cp --parents {} "$OLDPWD/$DOCS/" )
cp "$EXPORT/provenance.json" "$DOCS/export-provenance.json"
echo "pruned at fraction $F -> $EXPORT; reports in $DOCS (ship it: python scripts/release_demo.py --pruned $EXPORT)"
