#!/usr/bin/env bash
# The paper's conditions at demo scale (issue 18; docs/demo/fidelity.md says what each step measures).
# NOT quick: on 2 CPU cores about 3 h for the base recipe (skipped when BASE is already trained), about
# 25 min per joint-stage variant (4 of them), a few minutes of analyses, about 40 min for the 3-seed sweep.
#   0. the benchmark in $DATA (make-data, ~6 min) if missing
#   1. BASE: the demo recipe (slimspeech train: prep, text || ctc, joint; ~3 h), shipped ($BASE/ship = "full":
#      ctc_compress projector, decoder fully trained) and connected before any joint step ($BASE/connected =
#      "pretrained": the text-stage decoder, before it saw speech; ~1 min)
#   2. variants, each one joint stage on BASE's prep/text/ctc (--base-run), then shipped:
#      frozen       ctc_compress, decoder frozen (SLAM with a frozen LLM: encoder + projector train)
#      lora         ctc_compress, decoder LoRA-adapted
#      stack-lora   stack_mlp projector (outside the embedding space, from scratch), encoder frozen, decoder LoRA
#      stack-frozen stack_mlp projector, encoder and decoder frozen (only the projector trains)
#   3. every model evaluated on the three test splits (300 utterances each, ~3 min per model) and exported
#      with those scores in its provenance ($OUT/<name>/export/provenance.json)
#   4. every model analysed twice on dev (200 utterances): as analyze does by default, and like with like
#      (--end task --text-source source: both inputs end with the task tag, translation on the English source)
#   5. slimspeech agreement over all conditions, per alignment, and for transcription alone (the Figure-1 grid)
#   6. slimspeech sweep --seeds 3 on the shipped demo model (the flags of scripts/prune_demo.sh); a one-seed
#      sweep dir in $REUSE_SWEEP (e.g. runs/prune-demo/sweep) is copied first so its runs count as seed 0
#   7. the small outputs (JSON, markdown, PNG) copied to $DOCS
# The run in docs/demo/fidelity.md used a smaller base (text 2600, ctc 2000 steps; joint 240 steps for the base
# and every variant), which fits one session of 2 cores (about 2 h in all):
#   RECIPE="--text-steps 2600 --ctc-steps 2000 --ctc-augment-from 690 --ctc-noise-from 1000" JOINT_STEPS=240 \
#     STEPS="0 1 2 3 4 5 7" bash scripts/fidelity.sh
# Usage: bash scripts/fidelity.sh    (env: DATA, BASE, OUT, DOCS, JOINT_STEPS, REUSE_SWEEP, SEEDS, STEPS="1 2 ...";
#        for a smoke run on tiny data: RECIPE="extra train flags", LIMIT, FRACTIONS, HEAL_STEPS, SWEEP_MODEL)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data/bench}
BASE=${BASE:-runs/fidelity/base}
OUT=${OUT:-runs/fidelity}
DOCS=${DOCS:-docs/demo/fidelity}
SEEDS=${SEEDS:-3}
STEPS=${STEPS:-"0 1 2 3 4 5 6 7"}
S=${S:-.venv/bin/slimspeech}
read -r -a RECIPE <<< "${RECIPE:-}"  # extra recipe flags of every train command (the demo's defaults if empty)
JOINT=(--joint-steps "${JOINT_STEPS:-900}")
LIMIT=${LIMIT:-300}
SWEEP_MODEL=${SWEEP_MODEL:-speechllm/assets/demo}
declare -A VARIANT=(
  [frozen]="--joint-decoder frozen"
  [lora]="--joint-decoder lora --joint-lr-decoder 1e-3"
  [stack-lora]="--joint-projector stack_mlp --joint-lr-encoder 0 --joint-decoder lora --joint-lr-decoder 1e-3"
  [stack-frozen]="--joint-projector stack_mlp --joint-lr-encoder 0 --joint-decoder frozen"
)
NAMES=(frozen lora stack-lora stack-frozen)
TESTS=("$DATA/test-clean.jsonl" "$DATA/test-noisy.jsonl" "$DATA/test-unseen-voice.jsonl")
step() { [[ " $STEPS " == *" $1 "* ]]; }
model_dir() {  # name -> the model dir of that condition
  case $1 in pretrained) echo "$BASE/connected" ;; full) echo "$BASE/ship" ;; demo) echo speechllm/assets/demo ;;
             *) echo "$OUT/$1/ship" ;; esac
}
MODELS=(pretrained full "${NAMES[@]}")

if step 0; then [ -f "$DATA/train.jsonl" ] || $S make-data --out "$DATA"; fi
if step 1; then
  $S train --data "$DATA" --out "$BASE" ${RECIPE[@]+"${RECIPE[@]}"} "${JOINT[@]}"
  [ -f "$BASE/ship/provenance.json" ] || $S train --data "$DATA" --out "$BASE" ${RECIPE[@]+"${RECIPE[@]}"} "${JOINT[@]}" --stage ship
  [ -f "$BASE/connected/provenance.json" ] || $S train --data "$DATA" --out "$BASE" ${RECIPE[@]+"${RECIPE[@]}"} "${JOINT[@]}" --stage connect
fi
if step 2; then
  for name in "${NAMES[@]}"; do
    read -r -a flags <<< "${VARIANT[$name]}"
    $S train --data "$DATA" --out "$OUT/$name" --base-run "$BASE" ${RECIPE[@]+"${RECIPE[@]}"} "${JOINT[@]}" "${flags[@]}"
    [ -f "$OUT/$name/ship/provenance.json" ] || \
      $S train --data "$DATA" --out "$OUT/$name" --base-run "$BASE" ${RECIPE[@]+"${RECIPE[@]}"} "${JOINT[@]}" "${flags[@]}" --stage ship
  done
fi
if step 3; then
  mkdir -p "$OUT/eval"
  for name in full "${NAMES[@]}"; do
    m=$(model_dir "$name")
    [ -f "$OUT/eval/$name.json" ] || $S evaluate --model "$m" --data "${TESTS[@]}" --limit "$LIMIT" --out "$OUT/eval/$name.json"
    [ -f "$OUT/export/$name/provenance.json" ] || $S export --model "$m" --eval "$OUT/eval/$name.json" \
      --out "$OUT/export/$name" --note "issue 18 variant $name (scripts/fidelity.sh)"
  done
fi
if step 4; then
  for name in demo "${MODELS[@]}"; do
    m=$(model_dir "$name")
    [ -f "$OUT/analysis/own/$name/analysis.json" ] || $S analyze --model "$m" --data "$DATA/dev.jsonl" --limit "${ANALYSIS_LIMIT:-200}" \
      --out "$OUT/analysis/own/$name"
    [ -f "$OUT/analysis/task/$name/analysis.json" ] || $S analyze --model "$m" --data "$DATA/dev.jsonl" --limit "${ANALYSIS_LIMIT:-200}" \
      --end task --text-source source --out "$OUT/analysis/task/$name"
  done
fi
if step 5; then
  for align in own task; do
    named=()
    for name in "${MODELS[@]}"; do named+=("$name=$OUT/analysis/$align/$name"); done
    $S agreement --analysis "${named[@]}" --out "$OUT/agreement/$align"
    $S agreement --analysis "${named[@]}" --tasks transcribe --out "$OUT/agreement/$align-transcribe"
  done
fi
if step 6; then
  if [ -n "${REUSE_SWEEP:-}" ] && [ ! -d "$OUT/sweep-seeds$SEEDS" ]; then cp -r "$REUSE_SWEEP" "$OUT/sweep-seeds$SEEDS"; fi
  $S sweep --model "$SWEEP_MODEL" --data "$DATA/train.jsonl" --analysis-data "$DATA/dev.jsonl" \
    --analysis-limit "${ANALYSIS_LIMIT:-200}" --eval-data "${TESTS[@]}" --fractions "${FRACTIONS:-0.17,0.25,0.33,0.42,0.5}" \
    --heal-steps "${HEAL_STEPS:-200}" --eval-limit "$LIMIT" --seeds "$SEEDS" --out "$OUT/sweep-seeds$SEEDS"
fi
if step 7; then
  mkdir -p "$DOCS"
  DOCS_ABS=$(cd "$DOCS" && pwd)
  for d in eval agreement analysis "sweep-seeds$SEEDS"; do
    [ -d "$OUT/$d" ] || continue
    depth=(); [ "$d" = "sweep-seeds$SEEDS" ] && depth=(-maxdepth 1)  # the sweep's tables and plot, not each run's
    # not the all-condition pair plots (over 1 MB each, unreadable) nor the default alignment's heatmaps
    ( cd "$OUT" && find "$d" ${depth[@]+"${depth[@]}"} \( -name '*.json' -o -name '*.md' -o -name '*.png' \) \
        ! -name 'ckpt*' ! -path '*/healed*' ! -path '*/pruned*' ! -path '*.work*' ! -path 'agreement/own/pairs.png' \
        ! -path 'agreement/task/pairs.png' ! -path 'analysis/own/*.png' -print0 | xargs -0 -r -I{} cp --parents {} "$DOCS_ABS/" )
  done
  for name in full "${NAMES[@]}"; do
    [ -f "$OUT/export/$name/provenance.json" ] && mkdir -p "$DOCS/provenance" && \
      cp "$OUT/export/$name/provenance.json" "$DOCS/provenance/$name.json"
  done
  echo "fidelity outputs in $DOCS: fill in docs/demo/fidelity.md from them"
fi
