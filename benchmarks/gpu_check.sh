#!/usr/bin/env bash
# The GPU check of the mixed-precision work: the base model's bf16 pretraining step at batch
# 256 and 1024 x N = 32 and 64 (and once with attention dropout 0, cuDNN's fused attention;
# once with the layers rematerialised),
# model FLOPs per step, mfu (model FLOPs) and hfu (XLA's) against the device's bf16 peak, peak
# device memory and the compiled step's arguments + temporaries + outputs; then 120 steps of
# the real pretraining loop (base, bundled QM9, batch 256) for the telemetry of its log lines
# (step_seconds, molecules_per_second, input_wait_fraction, mfu, hfu). Writes one JSON (under
# 10 minutes on one H100/H200, an estimate: it has never run on a GPU):
#   bash benchmarks/gpu_check.sh [OUT_DIR]      # -> OUT_DIR/train_step_gpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-benchmarks}}"
mkdir -p "$out/gpu_cases"
python -m pip install --quiet -e . "jax[cuda12]==0.10.2"
python -c "import jax; assert jax.default_backend() == 'gpu', jax.devices(); print(jax.devices())"
run_case() {  # NAME BATCH ATOMS [extra flags]
  local name=$1 batch=$2 atoms=$3
  shift 3
  timeout 150 python benchmarks/benchmark.py --configs=base --dtypes=bfloat16 \
    --batch_size="$batch" --num_atoms="$atoms" --steps=10 --out="$out/gpu_cases/$name.json" "$@" \
    || echo "{\"case\": \"$name\", \"error\": \"exit $?\"}" > "$out/gpu_cases/$name.json"
}
run_case b256_n32 256 32
run_case b256_n64 256 64
run_case b256_n64_remat 256 64 --remat
run_case b1024_n32 1024 32
run_case b1024_n64 1024 64
run_case b256_n32_fused_attention 256 32 --attention_dropout=0
# The loop's own telemetry (train/telemetry.py), input pipeline included.
timeout 240 python experiments/pretrain.py --config=configs/base.py --workdir="$out/gpu_pretrain" \
  --config.batch_size=256 --config.total_steps=120 --config.log_every=40 --config.eval_every=0 \
  --config.checkpoint_every=1000 --config.data.max_atoms=32 --config.data.buckets="(16,32)" \
  --config.data.max_molecules=20000 --config.data.eval_molecules=0 \
  || echo "pretraining telemetry run failed: exit $?"
python - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
cases = {p.stem: json.loads(p.read_text()) for p in sorted((out / "gpu_cases").glob("*.json"))}
for case in cases.values():
    for r in case.get("results", []):
        r["fits_16_gib"] = r["compiled_step_bytes"] <= 16 * 2**30
telemetry_keys = ("step", "step_seconds", "molecules_per_second", "input_wait_fraction", "mfu", "hfu")
metrics = out / "gpu_pretrain" / "metrics.jsonl"
if metrics.exists():
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    cases["pretrain_loop_telemetry"] = [
        {k: line[k] for k in telemetry_keys if k in line} for line in lines if "loss" in line
    ]
(out / "train_step_gpu.json").write_text(json.dumps(cases, indent=2) + "\n")
print(json.dumps({k: [(r.get("molecules_per_second"), r.get("mfu"), r.get("hfu"),
                       r.get("peak_device_bytes")) for r in v.get("results", [])]
                  for k, v in cases.items() if isinstance(v, dict)}))
print(json.dumps(cases.get("pretrain_loop_telemetry")))
PY
