"""bf16 against fp32 pretraining from the same seed and data: the loss curves, step by step.

  python experiments/pretrain.py --config=configs/base.py:tiny --workdir=/tmp/fp32 \\
      --config.total_steps=300 --config.log_every=10 --config.model.dtype=float32
  python experiments/pretrain.py --config=configs/base.py:tiny --workdir=/tmp/bf16 \\
      --config.total_steps=300 --config.log_every=10 --config.model.dtype=bfloat16 \\
      --config.data.dir=/tmp/fp32/data/qm9
  python benchmarks/compare_precision.py --fp32=/tmp/fp32 --bf16=/tmp/bf16 \\
      --out=benchmarks/bf16_numerics.json
"""

import json
import pathlib

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("fp32", None, "Workdir of the float32 run.", required=True)
flags.DEFINE_string("bf16", None, "Workdir of the bfloat16 run.", required=True)
flags.DEFINE_string("out", None, "Output JSON file.", required=True)
flags.DEFINE_integer("after_step", 50, "The bound applies to logged steps after this one.")
flags.DEFINE_float("bound", 0.02, "Largest relative loss difference allowed.")


def losses(workdir: str) -> dict[int, float]:
    rows = map(json.loads, (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines())
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


def main(argv):
    del argv
    fp32, bf16 = losses(FLAGS.fp32), losses(FLAGS.bf16)
    steps = sorted(set(fp32) & set(bf16))
    relative = {s: abs(bf16[s] - fp32[s]) / abs(fp32[s]) for s in steps}
    checked = [relative[s] for s in steps if s > FLAGS.after_step]
    worst = max(checked, default=0.0)
    summary = {
        "steps": steps,
        "loss_fp32": [fp32[s] for s in steps],
        "loss_bf16": [bf16[s] for s in steps],
        "relative_difference": [round(relative[s], 5) for s in steps],
        f"max_relative_difference_after_step_{FLAGS.after_step}": round(worst, 5),
        "bound": FLAGS.bound,
        "within_bound": worst <= FLAGS.bound,
    }
    pathlib.Path(FLAGS.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(f"max relative loss difference after step {FLAGS.after_step}: {100 * worst:.2f}%")


if __name__ == "__main__":
    app.run(main)
