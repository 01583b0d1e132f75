#!/usr/bin/env bash
# The README's first command (`make demo`): on the embedded ORL faces, train the original model
# (all of train) and the retrained reference (retain only), then evaluate both with the
# MUFAC/MUCAC protocol. Re-running reuses finished checkpoints; an interrupted run resumes.
set -euo pipefail

DIR="${DEMO_DIR:-runs/demo}"
SEED="${DEMO_SEED:-0}"
DATASET="${DEMO_DATASET:-orl-glasses}"
mkdir -p "$DIR"
declare -a TIMES=()

step() {  # step NAME COMMAND... : run a command and record its wall time
  local name="$1"; shift
  local start="$EPOCHREALTIME"
  "$@"
  TIMES+=("$(awk -v n="$name" -v a="$start" -v b="$EPOCHREALTIME" \
    'BEGIN { printf "%-18s %7.1f s", n, b - a }')")
}

echo "== dlfd demo: $DATASET, seed $SEED, output in $DIR"
dlfd data info --dataset "$DATASET" --split-seed "$SEED"
step "train original" dlfd train --dataset "$DATASET" --role original --seed "$SEED" \
  --out "$DIR/original.safetensors"
step "train retrained" dlfd train --dataset "$DATASET" --role retrained --seed "$SEED" \
  --out "$DIR/retrained.safetensors"
step "evaluate both" dlfd evaluate --dataset "$DATASET" \
  --model "$DIR/original.safetensors" --model "$DIR/retrained.safetensors" \
  --reference "$DIR/retrained.safetensors" --json "$DIR/evaluation.json"

echo "== wall time per step (this machine: $(nproc) CPU threads)"
printf '%s\n' "${TIMES[@]}"
echo "== results: $DIR/evaluation.json"
