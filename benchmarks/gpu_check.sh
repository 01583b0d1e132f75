#!/usr/bin/env bash
# The prepared GPU check, for a machine with a CUDA GPU (a few minutes):
#   1. what the machine is (torch, CUDA, GPUs) -> OUT/device.json
#   2. the tests marked `gpu` (DLFD on CUDA: reproducible within tolerance; amp (bf16) and
#      channels-last run and stay close to fp32, in DLFD and in train/evaluate; NCCL with two
#      processes when two GPUs exist) -> OUT/pytest.txt
#   3. DLFD's per-batch costs at MUFAC's shape (generated 128x128 images, 8 classes,
#      resnet18, 10k retain; K = 15), amp off and on, with the projected epochs
#      (benchmarks/dlfd_speed.py --mufac-shape) -> OUT/mufac-fp32.json, OUT/mufac-amp.json
# Without a CUDA GPU it says so and exits 0, writing nothing.
#   bash benchmarks/gpu_check.sh [OUT]     (default OUT: runs/gpu-check; PYTHON=.venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/gpu-check}"
PY="${PYTHON:-.venv/bin/python}"

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU present (torch $("$PY" -c 'import torch; print(torch.__version__)')); nothing to check"
  exit 0
fi
mkdir -p "$OUT"
"$PY" - "$OUT/device.json" <<'PYEOF'
import json, sys, torch
info = {
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    "bf16": torch.cuda.is_bf16_supported(),
}
json.dump(info, open(sys.argv[1], "w"), indent=1)
print("gpu_check:", info)
PYEOF
"$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py | tee "$OUT/pytest.txt"
for mode in fp32 amp; do
  flag=""; [ "$mode" = amp ] && flag="--amp"
  timeout 300 "$PY" benchmarks/dlfd_speed.py --mufac-shape --device cuda --steps 15 \
    --batches 10 $flag --json "$OUT/mufac-$mode.json" --force
done
echo "gpu_check: wrote $OUT (device.json, pytest.txt, mufac-fp32.json, mufac-amp.json)"
