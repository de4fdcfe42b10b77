#!/usr/bin/env bash
# The CPU-scale study of docs/results.md: tiny pretraining on QM9, then fine-tuning on four
# bundled data sets (scaffold split, 3 seeds) from the pretrained and from a random
# initialisation, next to a Morgan-fingerprint random forest.
#   bash experiments/cpu_study.sh [OUT_DIR]   (default workdirs/study)
set -euo pipefail
out="${1:-workdirs/study}"
pretrain="${PRETRAIN_DIR:-workdirs/tiny}"
epochs="${EPOCHS:-8}"
mkdir -p "$out"
python experiments/pretrain.py --config=configs/base.py:tiny --workdir="$pretrain"
for dataset in esol freesolv lipophilicity b3db; do
  # A fixed random subset of the two larger sets keeps the study within a CPU session.
  limit=0
  case "$dataset" in lipophilicity | b3db) limit="${SUBSET:-1000}" ;; esac
  for init in scratch pretrained; do
    ckpt=()
    [ "$init" = pretrained ] && ckpt=(--config.init_checkpoint="$pretrain/checkpoints")
    python experiments/finetune.py --config=configs/finetune.py:tiny --config.dataset="$dataset" \
      --config.epochs="$epochs" --config.max_molecules="$limit" "${ckpt[@]}" \
      --workdir="$out/$dataset-$init"
  done
done
python experiments/compare.py "$out"/*/results.json benchmarks/rf_baseline/*.json --out="$out/comparison.md"
