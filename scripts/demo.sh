#!/usr/bin/env bash
# The full CPU demo, offline, on scenes the project makes itself (procedural, 64x64):
#   0. pretrain the offline Difix prior (SD-Turbo's stand-in: VAE autoencoder + one-step
#      denoiser at t=199) on procedural scenes/patterns and scikit-image's sample photos;
#      cached in outputs/demo/prior/ and reused by later runs (delete the folder to retrain);
#   1. curate (render, target, reference) pairs from two training scenes and one test scene
#      (strategies: sparse reconstruction and model underfitting);
#   2. fine-tune the tiny Difix fixer from the prior on them (val = pairs from the unseen test
#      scene) and check it leaves clean images of unseen scenes alone;
#   3. reconstruct a fourth, held-out scene from sparse views three ways and print the
#      paper's Table 2 layout: 3DGS / Difix3D (progressive fix) / Difix3D+ (+ post-render fix).
# Usage: scripts/demo.sh [python]   (make demo runs it with .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
OUT=outputs/demo
LOGS=lightning_logs/demo
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
start=$(date +%s)
say() { printf '\n=== [%ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

PRIOR=$OUT/prior
if [ -f "$PRIOR/complete" ]; then
  say "prior: reusing $PRIOR/last.ckpt (trained by an earlier run; rm -r $PRIOR to retrain)"
else
  resume=()
  # A killed run left a periodic last.ckpt: continue it instead of starting over.
  [ -f "$PRIOR/last.ckpt" ] && resume=(--ckpt_path "$PRIOR/last.ckpt")
  say "prior: pretrain the tiny VAE + UNet offline (once)"
  "$PY" main.py fit --config configs/demo/prior.yaml \
    --trainer.callbacks.init_args.dirpath="$PRIOR" \
    --trainer.logger.init_args.save_dir="$LOGS" "${resume[@]}"
  "$PY" benchmarks/fixer_clean.py --prior "$PRIOR/last.ckpt" --out "$PRIOR/quality.json"
  date -u +%FT%TZ > "$PRIOR/complete"
fi

# Pairs are rebuilt per scene+strategy on every run (deterministic), so re-running is safe.
for seed in 1 2 3; do
  split=train; [ "$seed" = 3 ] && split=test
  for strategy in sparse underfit; do
    say "curate: $strategy pairs from procedural scene $seed ($split split)"
    "$PY" main.py fit --config "configs/demo/curate_${strategy}.yaml" \
      --data.init_args.path="$OUT/scenes/procedural_$seed" \
      --data.init_args.procedural_seed="$seed" \
      --trainer.callbacks.out_dir="$OUT/pairs" \
      --trainer.callbacks.scene_name="procedural_$seed" \
      --trainer.callbacks.split="$split" \
      --model.init_args.output_dir="$OUT/fits/${strategy}_$seed" \
      --trainer.logger.init_args.save_dir="$LOGS"
  done
done

say "fine-tune the tiny fixer from the prior on the curated pairs"
"$PY" main.py fit --config configs/demo/difix_pairs.yaml \
  --model.init_args.pretrained="$PRIOR/last.ckpt" \
  --trainer.logger.init_args.save_dir="$LOGS"
say "fixer on clean images of unseen scenes (it must not damage them)"
"$PY" benchmarks/fixer_clean.py --fixer "$OUT/fixer/last.ckpt" --out "$OUT/fixer_clean.json"

say "Difix3D / Difix3D+ on a held-out sparse-view scene"
"$PY" benchmarks/difix3d_table.py --config configs/demo/difix3d.yaml --out "$OUT/table.json" -- \
  --trainer.logger.init_args.save_dir="$LOGS" \
  --trainer.callbacks.fixer="$OUT/fixer/last.ckpt"
say "prior reconstruction (held-out 64x64 images) and fixer on clean unseen images"
"$PY" - "$PRIOR/quality.json" "$OUT/fixer_clean.json" <<'EOF'
import json, sys
for path in sys.argv[1:]:
    for model, sets in json.load(open(path)).items():
        print(f"{model:<18}" + "  ".join(f"{name} {row['psnr']:.2f} dB / {row['ssim']:.3f}" for name, row in sets.items()))
EOF
say "done: TensorBoard with  tensorboard --logdir $LOGS"
