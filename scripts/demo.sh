#!/usr/bin/env bash
# The README's first command (`make demo`): on the embedded ORL faces (orl-glasses), benchmark
# unlearning methods from the same original model over three seeds (`dlfd bench`: trains the
# original and the retrained reference per seed, runs each method, evaluates everything with
# the MUFAC/MUCAC protocol), then build the report (`dlfd report`: a self-contained HTML file
# and a Markdown version) and print the main table. Re-running reuses finished runs and the
# cached models; an interrupted run resumes.
set -euo pipefail

DIR="${DEMO_DIR:-runs/demo}"
SEEDS="${DEMO_SEEDS:-0,1,2}"
DATASET="${DEMO_DATASET:-orl-glasses}"
WANTED="${DEMO_METHODS:-original,retrain,finetune,neggrad,scrub,dlfd}"
START="$EPOCHREALTIME"

# Keep the wanted methods that this dlfd registers (warn about the others).
METHODS="$(python - "$WANTED" <<'EOF'
import sys

from dlfd.bench import available_methods

known = available_methods()
wanted = [m for m in sys.argv[1].split(",") if m]
for m in wanted:
    if m not in known:
        print(f"warning: method {m!r} is not registered in this dlfd; skipped", file=sys.stderr)
print(",".join(m for m in wanted if m in known))
EOF
)"

echo "== dlfd demo: $DATASET, methods $METHODS, seeds $SEEDS; output in $DIR"
dlfd data info --dataset "$DATASET" --split-seed 0
# The table goes to stdout once, from the report; progress and the log lines go to stderr.
dlfd bench --dataset "$DATASET" --methods "$METHODS" --seeds "$SEEDS" \
  --out "$DIR" --cache-dir "$DIR/cache" > /dev/null
dlfd report "$DIR"

awk -v a="$START" -v b="$EPOCHREALTIME" -v n="$(nproc)" \
  'BEGIN { printf "== demo wall time: %.0f s on %d CPU threads (per run: %s)\n", b - a, n, "'"$DIR"'/bench.log" }'
echo "== report: $DIR/report.html (self-contained, opens offline); Markdown: $DIR/report.md"
