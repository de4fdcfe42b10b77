#!/usr/bin/env bash
# The CPU-scale study of docs/results.md (issue 16): does blended 2D/3D pretraining on drug-like
# molecules help, and does blending beat either modality alone (the paper's Table 4 ablation)?
#   1. corpus   the first CORPUS molecules of the bundled MOSES subset with RDKit conformers,
#               and the next EVAL_MOLECULES as the held-out set (data_prep/build_shards.py)
#   2. pretrain configs/base.py:small for STEPS steps, once per relation variant in VARIANTS:
#               blend (0.2/0.2/0.6), 2d (SPD + edge only), 3d (3D only)
#   3. finetune configs/finetune.py:small on DATASETS from scratch and from each variant's
#               checkpoint (scaffold split, SEEDS seeds, EPOCHS epochs, early stop PATIENCE);
#               every init reads the scratch run's split file (the same record ids)
#   4. rf       Morgan-fingerprint random forest on the same records and split
#   4b. lr      learning-rate sensitivity: on LR_SETS, scratch and each variant fine-tuned
#               again at each peak lr of LRS
#   5. probe    ridge / logistic regression on frozen graph embeddings of each checkpoint and
#               of random inits (SEEDS of them), same records and split, on DATASETS and
#               PROBE_SETS; on PROBE_SETS also of each variant's checkpoints at PROBE_STEPS
#               (probe quality along pretraining)
#   6. table    experiments/compare.py over every result; docs/results.md's tables and the
#               goal (experiments/study/study_tables.py); plots (experiments/study/plot_study.py)
# Results: RESULTS/<set>/{scratch,blend,2d,3d,rf}.json (finetune.py's / baseline_rf.py's
# results.json), RESULTS/<set>/probe_{scratch,blend,2d,3d}.json,
# RESULTS/probe_steps/<set>/<variant>_<step>.json, RESULTS/lr/<set>/<init>_lr<lr>.json,
# RESULTS/pretrain/<variant>.jsonl
# (the pretraining metrics), RESULTS/settings.json, RESULTS/stages.txt (each stage's date, CPU
# and corpus sha256), RESULTS/comparison.md, RESULTS/tables.md
# (the report's tables and the goal decided from them), RESULTS/study.png
# (test metrics) and RESULTS/pretrain.png (pretraining curves); work files under OUT_DIR, one
# log per run under OUT_DIR/logs.
#
#   bash experiments/study/cpu_study.sh [OUT_DIR]        (default workdirs/study)
#
# Unattended and resumable: a stage whose output exists is skipped (shard builds check their
# metadata.json and shards), an interrupted pretraining resumes from its last checkpoint, an
# interrupted fine-tuning run starts again. The full study (defaults) takes 6-8 hours on the
# 2-core machine (docs/results.md), more than one session: run it in stages that change only
# VARIANTS, DATASETS and PROBE_SETS (settings.json refuses a stage with other settings), e.g.
#   VARIANTS=blend DATASETS=" " bash experiments/study/cpu_study.sh     # pretraining only
#   VARIANTS=" " bash experiments/study/cpu_study.sh                    # scratch, forest, random probes
#   VARIANTS=blend DATASETS="esol freesolv" PROBE_SETS=esol bash experiments/study/cpu_study.sh
# Once the corpus is built, the first two may run side by side. A later stage needs its
# variants' pretraining workdirs, which are not committed: OUT_DIR must still hold them, or
# the stage pretrains again.
# Scale it with environment variables, e.g. the pilot of docs/results.md (9 min):
#   CORPUS=2000 EVAL_MOLECULES=200 STEPS=100 SEEDS=1 EPOCHS=3 DATASETS=freesolv RF_TREES=50 \
#     RESULTS=workdirs/pilot/results bash experiments/study/cpu_study.sh workdirs/pilot
set -euo pipefail
out="${1:-workdirs/study}"
results="${RESULTS:-benchmarks/study}"
corpus="${CORPUS:-50000}"
eval_molecules="${EVAL_MOLECULES:-1000}"
steps="${STEPS:-10000}"
variants="${VARIANTS:-blend 2d 3d}"
datasets="${DATASETS:-esol freesolv lipophilicity b3db}"
seeds="${SEEDS:-3}"
epochs="${EPOCHS:-60}"
patience="${PATIENCE:-15}"
b3db_subset="${B3DB_SUBSET:-2000}" # A fixed random subset (0 = all 7,807).
rf_trees="${RF_TREES:-500}"
workers="${WORKERS:-2}"
probe_sets="${PROBE_SETS:-esol lipophilicity}"
lr_sets="${LR_SETS:-freesolv}" # Fine-tuned again at each peak lr of LRS (" " = none).
lrs="${LRS:-3e-5 3e-4}"
probe_steps="${PROBE_STEPS:-$((steps / 10)) $((steps / 5)) $((steps / 2))}"
# The pretraining runs' seed (initialisation, data order, blend draws). With another seed use
# another OUT_DIR and RESULTS (or remove the variants' pretrain and finetune workdirs).
pretrain_seed="${PRETRAIN_SEED:-0}"
max_atoms=64 # configs/finetune.py:small's data.max_atoms; the forest and probe use the same.
seed_list="$(seq -s, 0 $((seeds - 1)))"

mkdir -p "$out/logs" "$results"
start=$SECONDS
# Compiled steps are shared by the runs of one data set (same shapes): compile each once.
export JAX_COMPILATION_CACHE_DIR="$out/jax_cache"
# How the results were made (the table is recomputed from RESULTS alone). The study runs in
# stages (VARIANTS, DATASETS) across sessions; every stage must use the same settings.
settings="{\"corpus\": $corpus, \"eval_molecules\": $eval_molecules, \"steps\": $steps, \
\"seeds\": $seeds, \"epochs\": $epochs, \"patience\": $patience, \"b3db_subset\": $b3db_subset, \
\"rf_trees\": $rf_trees, \"max_atoms\": $max_atoms}"
if [ ! -f "$results/settings.json" ]; then
  echo "$settings" >"$results/settings.json"
elif [ "$(cat "$results/settings.json")" != "$settings" ]; then
  echo "$results/settings.json says $(cat "$results/settings.json"); this run has $settings:" \
    "use the same settings or another RESULTS" >&2
  exit 1
fi

# run NAME CMD...: runs CMD with its output in OUT/logs/NAME.log; a failure names the log.
run() {
  local name="$1"
  shift
  echo "[$(date +%H:%M:%S)] $name"
  if ! "$@" >>"$out/logs/$name.log" 2>&1; then
    echo "failed: $name (see $out/logs/$name.log)" >&2
    tail -n 5 "$out/logs/$name.log" >&2
    exit 1
  fi
}

relation_flags() { # The blend of each pretraining variant (docs/spec.md SPEC 4).
  case "$1" in
    blend) ;; # configs/base.py: pairs (0.2, 0.2, 0.6), atoms (0.4, 0.6).
    2d) echo "--config.model.blend_probs=(0.5,0.5,0.0) --config.model.node_blend_probs=(1.0,0.0)" ;;
    3d) echo "--config.model.blend_probs=(0.0,0.0,1.0) --config.model.node_blend_probs=(0.0,1.0)" ;;
    *) echo "unknown variant $1" >&2 && return 1 ;;
  esac
}

subset() { # max_molecules of a data set: a fixed random subset of B3DB, the others whole.
  if [ "$1" = b3db ]; then echo "$b3db_subset"; else echo 0; fi
}

# 1. Corpus (build_shards is a no-op when its shards match its arguments).
corpus_dir="$out/data/moses"
eval_dir="$out/data/moses_eval"
run corpus python data_prep/build_shards.py --input=moses --output="$corpus_dir" \
  --limit="$corpus" --workers="$workers" --num_shards=16
run corpus_eval python data_prep/build_shards.py --input=moses --output="$eval_dir" \
  --offset="$corpus" --limit="$eval_molecules" --workers="$workers" --num_shards=1
# Each stage builds the corpus again (workdirs do not outlive a session) and may run on another
# machine: RESULTS/stages.txt records both, and a corpus whose bytes differ from the first
# stage's is reported, since pretraining on it is not the same computation.
digest="$(python -c 'import hashlib, json, sys
print(hashlib.sha256("".join(s["sha256"] for p in sys.argv[1:]
  for s in json.load(open(p))["shards"]).encode()).hexdigest())' \
  "$corpus_dir/metadata.json" "$eval_dir/metadata.json")"
cpu="$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs || uname -m)"
echo "$(date -u +%FT%TZ) cpu=\"$cpu\" corpus_sha256=$digest variants=\"$variants\"" \
  "pretrain_seed=$pretrain_seed datasets=\"$datasets\"" >>"$results/stages.txt"
first="$(head -n 1 "$results/stages.txt" | grep -o 'corpus_sha256=[0-9a-f]*' | cut -d= -f2)"
if [ "$first" != "$digest" ]; then
  echo "warning: this corpus (sha256 $digest) differs from the first stage's ($first," \
    "$results/stages.txt): pretraining here is not the same computation" >&2
fi

# 2. Pretraining: one run per variant, skipped once its final checkpoint exists.
warmup=$((steps / 20))
eval_every=$((steps / 10 / 50 * 50)) # A multiple of log_every (50); 0 = at the end only.
# Ten checkpoints, all kept: the probe stage below scores the encoder along its pretraining.
checkpoint_every=$((steps >= 10 ? steps / 10 : 1))
mkdir -p "$results/pretrain"
for variant in $variants; do
  workdir="$out/pretrain/$variant"
  if [ ! -d "$workdir/checkpoints/$steps" ]; then
    # shellcheck disable=SC2046 # The relation flags are separate words.
    run "pretrain_$variant" python experiments/pretrain.py --config=configs/base.py:small \
      --workdir="$workdir" --config.data.dir="$corpus_dir" --config.data.eval_dir="$eval_dir" \
      --config.total_steps="$steps" --config.optimizer.warmup_steps="$warmup" \
      --config.eval_every="$eval_every" --config.checkpoint_every="$checkpoint_every" \
      --config.keep_checkpoints=10 --config.seed="$pretrain_seed" $(relation_flags "$variant")
  fi
  cp "$workdir/metrics.jsonl" "$results/pretrain/$variant.jsonl"
done

split_of() { # The scratch run's split file of a data set: everyone's split.
  echo "$out/finetune/$1/scratch/split_scaffold_seed0.json"
}

ensure_split() { # A later stage whose scratch workdir is gone writes the split again without
  # fine-tuning (the scaffold split is deterministic: the same record ids).
  [ -f "$(split_of "$1")" ] || run "split_$1" python experiments/make_split.py --dataset="$1" \
    --max_molecules="$(subset "$1")" --max_atoms="$max_atoms" --out="$(split_of "$1")"
}

# finetune DATASET INIT WORKDIR [FLAG...]: configs/finetune.py:small on DATASET with the study's
# settings, from scratch or from variant INIT's checkpoint; every run but DATASET's scratch run
# (which makes the split) reads that run's split file.
finetune() {
  local dataset="$1" init="$2" workdir="$3"
  shift 3
  local extra=()
  if [ "$workdir" != "$(dirname "$(split_of "$dataset")")" ]; then
    ensure_split "$dataset"
    extra+=(--config.split_file="$(split_of "$dataset")")
  fi
  [ "$init" = scratch ] || extra+=(--config.init_checkpoint="$out/pretrain/$init/checkpoints")
  run "finetune_${dataset}_$(basename "$workdir")" python experiments/finetune.py \
    --config=configs/finetune.py:small --config.dataset="$dataset" \
    --config.max_molecules="$(subset "$dataset")" --config.num_seeds="$seeds" \
    --config.epochs="$epochs" --config.patience="$patience" "${extra[@]}" "$@" \
    --workdir="$workdir"
}

# 3-4. Per data set: fine-tuning (scratch first), the forest.
for dataset in $datasets; do
  limit="$(subset "$dataset")"
  mkdir -p "$results/$dataset"
  for init in scratch $variants; do
    dest="$results/$dataset/$init.json"
    workdir="$out/finetune/$dataset/$init"
    [ -f "$dest" ] && continue
    [ -f "$workdir/results.json" ] || finetune "$dataset" "$init" "$workdir"
    cp "$workdir/results.json" "$dest"
  done
  if [ ! -f "$results/$dataset/rf.json" ]; then
    ensure_split "$dataset"
    run "rf_$dataset" python experiments/baseline_rf.py --dataset="$dataset" \
      --max_molecules="$limit" --max_atoms="$max_atoms" --split_file="$(split_of "$dataset")" \
      --seeds="$seed_list" --n_estimators="$rf_trees" --n_jobs="$workers" \
      --workdir="$out/rf/$dataset" --out="$results/$dataset/rf.json"
  fi
done

# 4b. Learning-rate sensitivity on LR_SETS: scratch and each variant fine-tuned again at each
# peak lr of LRS (the study's is configs/finetune.py:small's 1e-4), on the same split.
for dataset in $lr_sets; do
  mkdir -p "$results/lr/$dataset"
  for init in scratch $variants; do
    for lr in $lrs; do
      dest="$results/lr/$dataset/${init}_lr$lr.json"
      workdir="$out/finetune/$dataset/${init}_lr$lr"
      [ -f "$dest" ] && continue
      [ -f "$workdir/results.json" ] ||
        finetune "$dataset" "$init" "$workdir" --config.optimizer.peak_lr="$lr"
      cp "$workdir/results.json" "$dest"
    done
  done
done

# 5. Probes on DATASETS and PROBE_SETS (no fine-tuning needed): random inits and each
# variant's last checkpoint -> RESULTS/<set>/probe_<init>.json; on PROBE_SETS also each
# variant's checkpoints at PROBE_STEPS -> RESULTS/probe_steps/<set>/<variant>_<step>.json.
for dataset in $(echo $datasets $probe_sets | tr ' ' '\n' | awk '!seen[$0]++'); do
  mkdir -p "$results/$dataset"
  ensure_split "$dataset"
  common=(--dataset="$dataset" --max_molecules="$(subset "$dataset")" --max_atoms="$max_atoms"
    --split_file="$(split_of "$dataset")" --workdir="$out/probe/$dataset")
  if [ ! -f "$results/$dataset/probe_scratch.json" ]; then
    run "probe_${dataset}_scratch" python experiments/linear_probe.py "${common[@]}" \
      --config=configs/base.py:small --seeds="$seed_list" \
      --out="$results/$dataset/probe_scratch.json"
  fi
  for variant in $variants; do
    if [ ! -f "$results/$dataset/probe_$variant.json" ]; then
      run "probe_${dataset}_$variant" python experiments/linear_probe.py "${common[@]}" \
        --checkpoint="$out/pretrain/$variant" --out="$results/$dataset/probe_$variant.json"
    fi
    case " $probe_sets " in *" $dataset "*) ;; *) continue ;; esac
    mkdir -p "$results/probe_steps/$dataset"
    for step in $probe_steps; do
      dest="$results/probe_steps/$dataset/${variant}_$step.json"
      [ -f "$dest" ] || run "probe_steps_${dataset}_${variant}_$step" \
        python experiments/linear_probe.py "${common[@]}" --checkpoint="$out/pretrain/$variant" \
        --step="$step" --out="$dest"
    done
  done
done

# 6. The table and the plots (once there is a fine-tuning result: a pretraining-only stage,
# DATASETS=" ", has none).
shopt -s nullglob
finished=("$results"/*/*.json)
if [ ${#finished[@]} -gt 0 ]; then
  run compare python experiments/compare.py "${finished[@]}" --out="$results/comparison.md"
  run tables python experiments/study/study_tables.py "$results" --out="$results/tables.md"
  run plots python experiments/study/plot_study.py "$results" --out="$results/study.png" \
    --curves_out="$results/pretrain.png"
fi
echo "done in $((SECONDS - start)) s: $results/comparison.md"
