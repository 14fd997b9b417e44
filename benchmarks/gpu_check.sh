#!/usr/bin/env bash
# The prepared GPU check: one command for a lent CUDA machine, every figure into one folder.
#   benchmarks/gpu_check.sh SCENE_DIR OUT_DIR          # SCENE_DIR: lego_blender_400 (400x400)
#   PARTS="tests scene" benchmarks/gpu_check.sh ...    # a subset (default: all, in this order); one
#   device call runs 10 minutes at most: PARTS="tests scene" in one, PARTS="nerf fixer" in the next
# Parts (each with its own time limit; a failing part is recorded and the next one runs):
#   tests  `pytest -m gpu` (gsplat against the CPU rasterizer, the NeRF on CUDA, the real Fixer
#          file when cached); the first gsplat call JIT-builds its kernels (~70 s on an H200).
#   scene  benchmarks/gpu_scene_check.py: 3DGS on lego 400x400 for 7,000 steps through main.py
#          and through a bare gsplat loop: steps/s, peak memory, Gaussians, test PSNR / SSIM.
#   nerf   benchmarks/nerf_lego.py at 400x400 on CUDA, training capped at 4 minutes: PSNR, times.
#   fixer  benchmarks/bench_fixer.py (SD-Turbo size, random weights, 576x1024, one reference,
#          bf16, eager and compiled) and benchmarks/bench_realtime.py (render + fix fps).
# Writes OUT_DIR/gpu_check.json (the parts' results merged) and one log per part.
set -uo pipefail
cd "$(dirname "$0")/.."
SCENE=${1:?usage: benchmarks/gpu_check.sh SCENE_DIR OUT_DIR}
OUT=${2:?usage: benchmarks/gpu_check.sh SCENE_DIR OUT_DIR}
PY=${PY:-python}
PARTS=${PARTS:-tests scene nerf fixer}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
status() { echo "{\"part\": \"$1\", \"exit\": $2, \"seconds\": $3}" > "$OUT/$1.status.json"; }
run_part() {  # NAME LIMIT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "=== $name (limit ${limit}s): $*"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  status "$name" "$rc" $((SECONDS - start))
  echo "=== $name: exit $rc after $((SECONDS - start)) s"
}
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/device.txt"
for part in $PARTS; do
  case $part in
    tests) run_part tests 240 $PY -m pytest -m gpu -q -p no:cacheprovider --junitxml="$OUT/tests.xml" ;;
    scene) run_part scene 300 $PY benchmarks/gpu_scene_check.py --scene "$SCENE" --steps 7000 --out "$OUT/scene.json" ;;
    nerf) run_part nerf 420 $PY benchmarks/nerf_lego.py --scene "$SCENE" --threads 8 --name nerf_lego_gpu \
            --out "$OUT/nerf.json" -- --trainer.accelerator=gpu --data.init_args.read.downscale=1 \
            --model.init_args.num_rays=8192 --model.init_args.eval_chunk=65536 --trainer.max_steps=20000 \
            --trainer.max_time=00:00:04:00 ;;
    fixer) run_part fixer 300 bash -c "$PY benchmarks/bench_fixer.py --config sd-turbo --sizes 576x1024 --refs 1 \
             --device cuda --dtype bfloat16 --compile both > '$OUT/fixer.txt' && $PY benchmarks/bench_realtime.py \
             --device cuda --sizes 1024x576 --fixer arch:sd-turbo > '$OUT/realtime.txt'" ;;
    *) echo "unknown part $part (tests, scene, nerf, fixer)" ;;
  esac
done
$PY - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
merged = {"device": (out / "device.txt").read_text().strip() if (out / "device.txt").exists() else None}
for f in sorted(out.glob("*.status.json")):
    merged.setdefault("status", {})[f.name.split(".")[0]] = json.loads(f.read_text())
for name in ("scene", "nerf"):
    if (out / f"{name}.json").exists():
        merged[name] = json.loads((out / f"{name}.json").read_text())
for name in ("fixer", "realtime"):
    if (out / f"{name}.txt").exists():
        merged[name] = (out / f"{name}.txt").read_text().strip().splitlines()[-12:]
if (out / "tests.xml").exists():
    import xml.etree.ElementTree as ET
    suite = ET.parse(out / "tests.xml").getroot().find("testsuite") or ET.parse(out / "tests.xml").getroot()
    merged["tests"] = {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped", "time")}
(out / "gpu_check.json").write_text(json.dumps(merged, indent=2))
print(json.dumps(merged, indent=2))
EOF
