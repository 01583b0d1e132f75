#!/usr/bin/env bash
# The README's service command (`make service-demo`): the deletion-request service on the
# embedded ORL faces (orl-glasses). Trains the model "in production" (the original), creates a
# store whose version 0 it is, files three erasure requests (one naming a person the data does
# not have, which is refused), processes them in two batches (each: DLFD from the current
# version with everything forgotten so far, evaluated and audited against a model retrained
# without those people), lists the versions, then serves the API and the dashboard on
# http://127.0.0.1:$PORT/ until Ctrl-C. Re-running reuses the original and the store.
set -euo pipefail

DIR="${SERVICE_DIR:-runs/service}"
PORT="${SERVICE_PORT:-8000}"
STORE="$DIR/store"
export DLFD_STORE="$STORE"

echo "== dlfd service demo: orl-glasses; store $STORE"
if [ ! -f "$DIR/original.safetensors" ]; then
  dlfd train --dataset orl-glasses --out "$DIR/original.safetensors"
fi
if [ ! -f "$STORE/dlfd-service.json" ]; then
  dlfd requests init --original "$DIR/original.safetensors"
  # three people of the training set (the ledger refuses people the model never saw)
  read -r -a PEOPLE <<< "$(python - <<'PY'
import os

from dlfd.service.store import Store

problem = Store(os.environ["DLFD_STORE"]).base_scenario.problem
print(" ".join(sorted({problem.records.identities[i] for i in problem.train})[:3]))
PY
)"
  dlfd requests add "${PEOPLE[0]}" --requester "demo" --reason "GDPR Art. 17" > /dev/null
  dlfd requests add "no-such-person" --requester "demo" > /dev/null \
    || echo "(refused, as expected: nothing was written)"
  dlfd requests process
  dlfd requests add "${PEOPLE[1]}" "${PEOPLE[2]}" --requester "demo" > /dev/null
  dlfd requests process
fi
dlfd requests list
dlfd requests versions
echo "== serving: dashboard http://127.0.0.1:$PORT/  (the write token is in $STORE/serve-token)"
exec dlfd serve --port "$PORT"
