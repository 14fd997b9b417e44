#!/usr/bin/env bash
# The prepared GPU check: one command for a lent CUDA machine, every figure into one folder.
#   benchmarks/gpu_check.sh SCENE_DIR OUT_DIR [more benchmarks/gpu_check.py options]
#   PARTS="tests scene train" BUDGET=420 benchmarks/gpu_check.sh .gpu_data/lego_blender_400 "$OUT"
#   PARTS="user realtime fixer" BUDGET=330 benchmarks/gpu_check.sh .gpu_data/lego_test50 "$OUT"
#   DRY_RUN=1 benchmarks/gpu_check.sh SCENE_DIR OUT_DIR      # CPU, tiny sizes (tests/tools/test_gpu_check.py)
# The parts, their limits and the merged OUT_DIR/gpu_check.json: benchmarks/gpu_check.py. The device
# machine's own Python and torch run it; the packages it lacks come as wheels in .whl/ (and
# .whl-video/: imageio-ffmpeg, for the predict videos), made by benchmarks/gpu_prepare.sh and installed
# here first, as the device README says. What to carry and the exact calls: docs/RESULTS.md, "GPU".
set -uo pipefail
cd "$(dirname "$0")/.."
SCENE=${1:?usage: benchmarks/gpu_check.sh SCENE_DIR OUT_DIR}
OUT=${2:?usage: benchmarks/gpu_check.sh SCENE_DIR OUT_DIR}
shift 2
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1
if [ -z "${DRY_RUN:-}" ] && [ -d .whl ]; then
  wheels=(.whl/*.whl)
  [ -d .whl-video ] && wheels+=(.whl-video/*.whl)
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}" \
    || { echo "gpu_check: installing the wheels of .whl/ failed"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
args=(--scene "$SCENE" --out "$OUT")
[ -n "${PARTS:-}" ] && args+=(--parts "$PARTS")
[ -n "${BUDGET:-}" ] && args+=(--budget "$BUDGET")
[ -n "${WORK:-}" ] && args+=(--work "$WORK")
[ -n "${DRY_RUN:-}" ] && args+=(--dry-run)
exec $PY benchmarks/gpu_check.py "${args[@]}" "$@"
