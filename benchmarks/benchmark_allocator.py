"""Train-step throughput with and without the glibc malloc settings of host_allocator.py.

  python benchmarks/benchmark_allocator.py --out=benchmarks/train_step_cpu_allocator.json

glibc reads its malloc settings only when a process starts, so the two settings cannot share a
process: this runs benchmarks/benchmark.py in fresh processes, alternating "default" (glibc as
it comes, MOLEBLEND_KEEP_MALLOC=1) and "tuned" (the settings pretrain.py starts with) for
--rounds rounds, so that a machine whose speed drifts over minutes skews both alike. Compiled
steps are cached on disk between the processes; compile times here mean nothing.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags

from moleblend_jax import host_allocator

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output JSON file.", required=True)
flags.DEFINE_list("configs", ["tiny"], "Variants of configs/base.py to time.")
flags.DEFINE_integer("rounds", 4, "Alternations of the two settings.")
flags.DEFINE_integer("steps", 20, "Timed steps per process.")

BENCHMARK = pathlib.Path(__file__).with_name("benchmark.py")
RESULT_KEYS = ("step_s_median", "molecules_per_s", "host_page_faults_per_step")
SETTINGS = {"default": {host_allocator.OPT_OUT_ENV: "1"}, "tuned": {}}


def run_benchmark(config: str, env_overrides: dict, cache_dir: str, out: str) -> dict:
    """One benchmarks/benchmark.py process (fp32) -> its result dict."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env.update(
        env_overrides,
        JAX_COMPILATION_CACHE_DIR=cache_dir,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    args = [f"--out={out}", f"--configs={config}", "--dtypes=float32", f"--steps={FLAGS.steps}"]
    subprocess.run([sys.executable, str(BENCHMARK), *args], env=env, check=True)
    return json.loads(pathlib.Path(out).read_text())


def median_over_runs(runs: dict[str, list[dict]], key: str) -> dict[str, float]:
    """{setting: [run result, ...]} -> {setting: median of run[key]}."""
    return {name: float(np.median([run[key] for run in rs])) for name, rs in runs.items()}


def main(argv):
    del argv
    summary = {"command": " ".join(sys.argv), "tunables": host_allocator.tunables_with_defaults("")}
    with tempfile.TemporaryDirectory() as tmp:
        for config in FLAGS.configs:
            runs = {name: [] for name in SETTINGS}
            for _ in range(FLAGS.rounds):
                for name, env in SETTINGS.items():
                    report = run_benchmark(config, env, f"{tmp}/cache", f"{tmp}/{name}.json")
                    summary.setdefault("machine", report["machine"])
                    result = report["results"][0]
                    runs[name].append(
                        {
                            "glibc_tunables": report["machine"]["glibc_tunables"],
                            "load_average": report["machine"]["load_average"],
                            **{k: result[k] for k in RESULT_KEYS},
                        }
                    )
            step_s = median_over_runs(runs, "step_s_median")
            summary[config] = {
                "runs": runs,
                "step_s_median_of_runs": {n: round(m, 4) for n, m in step_s.items()},
                "molecules_per_s_median_of_runs": {
                    n: round(m, 1) for n, m in median_over_runs(runs, "molecules_per_s").items()
                },
                "speedup": round(step_s["default"] / step_s["tuned"], 3),
            }
            print(json.dumps(summary[config]["step_s_median_of_runs"]), summary[config]["speedup"])
    out = pathlib.Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
