#!/usr/bin/env bash
# Your own activity CSV (issue 31): the bundled MoleculeACE set (615 Ki values, the authors'
# train/test split column) fine-tuned as a user would, from scratch and from the shipped encoder
# with descriptors, against a Morgan random forest on the same split.
#   bash experiments/study/activity_csv.sh OUT_DIR [RUN ...]
# RUN is any of rf, scratch, shipped_features, shipped, scratch_features (default: the first
# three). Each run writes OUT_DIR/RUN/ (a fine-tuning workdir, or rf.json) and OUT_DIR/RUN.log;
# a finished run is skipped when the script is run again.
set -euo pipefail
out="$1"
shift
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(rf scratch shipped_features)
csv="$(python -c 'from moleblend_jax.finetune import catalog
print(catalog.bundled_path("moleculeace_chembl2835_ki.csv"))')"
data=(--config.dataset=csv --config.dataset_path="$csv" --config.label_columns=y
  --config.split=column --config.split_column=split)
protocol=(--config=configs/finetune.py:small --config.max_molecules=0 --config.num_seeds=3
  --config.epochs=60 --config.patience=15)
features=(--config.extra_features=morgan_counts,rdkit_2d)
shipped=(--config.init_checkpoint=pretrained:small-moses)
mkdir -p "$out"

for run in "${runs[@]}"; do
  finetune=(moleblend finetune "${protocol[@]}" "${data[@]}" --workdir="$out/$run")
  result="$out/$run/results.json"
  case "$run" in
    rf) result="$out/rf.json"
      args=(python experiments/baseline_rf.py --dataset=csv --dataset_path="$csv" --label_columns=y
        --split=column --split_column=split --max_molecules=0 --workdir="$out/rf" --out="$result") ;;
    scratch) args=("${finetune[@]}") ;;
    scratch_features) args=("${finetune[@]}" "${features[@]}") ;;
    shipped) args=("${finetune[@]}" "${shipped[@]}") ;;
    shipped_features) args=("${finetune[@]}" "${shipped[@]}" "${features[@]}") ;;
    *) echo "unknown run: $run" >&2; exit 2 ;;
  esac
  [ -f "$result" ] && continue
  echo "$(date -u +%FT%TZ) $run: ${args[*]}"
  start=$(date +%s)
  "${args[@]}" > "$out/$run.log" 2>&1
  echo "$(date -u +%FT%TZ) $run done in $(( $(date +%s) - start )) s"
done
