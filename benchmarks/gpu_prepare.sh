#!/usr/bin/env bash
# What the GPU check needs beside the checkout on the device machine, made here (git-ignored):
#   .whl/        the packages the device image lacks (its Python 3.12, torch 2.11.0+cu130, lightning,
#                transformers, peft, torchmetrics, safetensors, tensorboard, scikit-image, scipy are there:
#                /work/.library/device/KINDS.md), as cp312 manylinux wheels, no dependencies resolved:
#                exactly this list
#   .whl-video/  imageio-ffmpeg (its static ffmpeg) for the predict videos of the part `user`: 0.5.1, as
#                the lock's 0.8.1 wheel alone (68 MB) is over the 64 MiB a device call carries
#   .gpu_data/lego_blender_400/  lego's train + test views (the check uses no val view), for `scene`
#   .gpu_data/lego_test50/       lego's train views + every 4th test view, for `user` (beside the video
#                wheel; progressive targets and test metrics then cover 50 views)
#   bash benchmarks/gpu_prepare.sh [LEGO_DIR]      # LEGO_DIR default ../shared/data/lego_blender_400
set -euo pipefail
cd "$(dirname "$0")/.."
LEGO=${1:-../shared/data/lego_blender_400}
PY=${PY:-python3}
WHEELS=(
  diffusers==0.42.1          # the fixer (lock's version)
  importlib_metadata==10.2.0 # diffusers'
  lazy-importer==0.1.0       # importlib_metadata's (Python < 3.15)
  gsplat==1.5.3              # the rasterizer: Python + CUDA sources, JIT-built on first use (~70 s)
  jsonargparse==4.53.0       # LightningCLI, with its [signatures] extra:
  docstring_parser==0.18.0
  typeshed_client==2.15.0
  lpips==0.1.4               # DifixModule's LPIPS loss (random VGG offline)
)
VIDEO_WHEELS=(imageio-ffmpeg==0.5.1)
download() {  # DEST SPEC...: the device README's command, one wheel per spec
  local dest=$1; shift
  rm -rf "$dest" && mkdir -p "$dest"
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 -d "$dest" "$@"
}
download .whl "${WHEELS[@]}"
download .whl-video "${VIDEO_WHEELS[@]}"

rm -rf .gpu_data && mkdir -p .gpu_data/lego_blender_400 .gpu_data/lego_test50
cp -r "$LEGO/train" "$LEGO/test" "$LEGO/transforms_train.json" "$LEGO/transforms_test.json" .gpu_data/lego_blender_400/
cp -r "$LEGO/train" "$LEGO/transforms_train.json" .gpu_data/lego_test50/
"$PY" - "$LEGO" .gpu_data/lego_test50 <<'EOF'
import json, shutil, sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
doc = json.loads((src / "transforms_test.json").read_text())
doc["frames"] = doc["frames"][::4]
(dst / "test").mkdir()
for frame in doc["frames"]:
    name = frame["file_path"].removeprefix("./") + ".png"
    shutil.copy(src / name, dst / name)
(dst / "transforms_test.json").write_text(json.dumps(doc, indent=2))
EOF
mib() { du -sb "$@" | awk '{s += $1} END {printf "%.1f", s / 1048576}'; }
repo=$(git ls-files -z | xargs -0 du -cb | tail -1 | awk '{printf "%.1f", $1 / 1048576}')
ls -l .whl .whl-video
echo "checkout (tracked files) ${repo} MiB; .whl $(mib .whl) MiB; .whl-video $(mib .whl-video) MiB"
echo "run 1 carries .whl + .gpu_data/lego_blender_400: $(mib .whl .gpu_data/lego_blender_400) MiB + the checkout"
echo "run 2 carries .whl + .whl-video + .gpu_data/lego_test50: $(mib .whl .whl-video .gpu_data/lego_test50) MiB + the checkout"
