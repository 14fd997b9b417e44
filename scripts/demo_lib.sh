# Shared by scripts/demo.sh and scripts/lego_sparse.sh (sourced, not run): the interpreter
# (first argument), the demo's output folders, one OpenMP thread per job, timestamped messages,
# background-job checks, the pair-curation call, the Difix3D rows beside the fixer's
# clean-image check and the image-quality printout.
PY=${1:-.venv/bin/python}
OUT=outputs/demo
LOGS=lightning_logs/demo
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
start=$(date +%s)
say() { printf '\n=== [%ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

# wait_or_fail PID LOG WHAT: waits for a background job; if it failed, shows its log's end and stops.
wait_or_fail() {
  wait "$1" && return 0
  tail -n 40 "$2"
  say "FAILED: $3 (full log: $2)"
  exit 1
}

# curate_args PAIRS_DIR STRATEGY NAME SPLIT [main.py overrides]: sets CURATE_ARGS to the main.py
# arguments that fit one scene with configs/demo/curate_STRATEGY.yaml and write its (render,
# target, reference) pairs into PAIRS_DIR/pairs.json under NAME (rebuilt on every run;
# concurrent writers take a lock). curate_pairs runs them (one process per curation).
curate_args() {
  local pairs_dir=$1 strategy=$2 name=$3 split=$4
  shift 4
  CURATE_ARGS=(fit --config "configs/demo/curate_${strategy}.yaml"
    --trainer.callbacks.out_dir="$pairs_dir"
    --trainer.callbacks.scene_name="$name"
    --trainer.callbacks.split="$split"
    --model.init_args.output_dir="$OUT/fits/${strategy}_$name"
    --trainer.logger.init_args.save_dir="$LOGS" --trainer.enable_progress_bar=false "$@")
}
curate_pairs() {
  curate_args "$@"
  "$PY" main.py "${CURATE_ARGS[@]}"
}

# progressive_beside_clean_check FIXER CLEAN_JSON: the fixer's clean-image check
# (benchmarks/fixer_clean.py -> CLEAN_JSON, its log beside it) in the background while the
# table's Difix3D / Difix3D+ rows fit with that same fixer (the caller's TABLE and TABLE_ARGS);
# stops if either fails.
progressive_beside_clean_check() {
  local fixer=$1 json=$2 clean
  "$PY" benchmarks/fixer_clean.py --fixer "$fixer" --out "$json" > "${json%.json}.log" 2>&1 &
  clean=$!
  "$PY" "${TABLE[@]}" --rows progressive "${TABLE_ARGS[@]}" --trainer.callbacks.fixer="$fixer"
  wait_or_fail "$clean" "${json%.json}.log" benchmarks/fixer_clean.py
}

# print_quality JSON...: the PSNR / SSIM per image set of benchmarks/fixer_clean.py outputs.
print_quality() {
  "$PY" - "$@" <<'PYEOF'
import json, sys
for path in sys.argv[1:]:
    for model, sets in json.load(open(path)).items():
        print(f"{model:<18}" + "  ".join(f"{name} {row['psnr']:.2f} dB / {row['ssim']:.3f}" for name, row in sets.items()))
PYEOF
}
