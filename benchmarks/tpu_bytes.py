"""Where a TPU train step's memory traffic goes, from its ahead-of-time compile (issue 29).

  python benchmarks/tpu_bytes.py --config=configs/base.py --topology=v5e:2x2 \
      --config.batch_size=64 --label=after --out=benchmarks/tpu_bytes.json
  python benchmarks/tpu_bytes.py --hlo=STEP.hlo --label=before ...   (an HLO text dumped earlier)

Compiles the pretraining train step for --num_atoms through the loop's builders (train/aot.py)
for compile-only TPU devices, and records under --label in --out: XLA's FLOPs and bytes
accessed per chip, the roofline bound and the MFU ceiling, and the traffic per (phase, model
scope) from the optimized HLO (train/hlo_traffic.py), largest first. The per-scope bytes are
this repository's estimate of XLA's total (printed beside it), not XLA's own split.
"""

import json
import pathlib
import subprocess
import sys

from absl import app, flags
from ml_collections import config_flags

from moleblend_jax.cli.aot import compile_only_devices

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, optionally FILE.py:variant.")
flags.DEFINE_string("topology", "v5e:2x2", "A TPU topology (train/aot.py's names).")
flags.DEFINE_integer("num_atoms", 64, "The bucket (padded atom count) to compile.")
flags.DEFINE_string("label", None, "Name of this measurement in --out.", required=True)
flags.DEFINE_string("out", "benchmarks/tpu_bytes.json", "JSON file the entry is merged into.")
flags.DEFINE_string("hlo", None, "Read this optimized HLO text instead of compiling.")
flags.DEFINE_integer("rows", 25, "Traffic rows kept.")
flags.DEFINE_integer("depth", 3, "Model scopes per traffic row.")


def _commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip()


def main(argv):
    del argv
    from moleblend_jax.train import aot, hardware, hlo_traffic

    entry = {"commit": _commit(), "command": " ".join(sys.argv[1:])}
    if FLAGS.hlo:
        hlo = pathlib.Path(FLAGS.hlo).read_text()
    else:
        compile_only_devices(FLAGS.topology)
        devices = aot.topology_devices(FLAGS.topology)
        hlos = []
        facts, (report,) = aot.compile_run(
            FLAGS.config, devices, [FLAGS.num_atoms], which=("train_step",), hlo_texts=hlos
        )
        (hlo,) = hlos
        chip = hardware.chip_of(devices[0])
        entry.update(
            topology=FLAGS.topology,
            device_kind=facts["device_kind"],
            molecules_per_chip=facts["molecules_per_device"],
            num_atoms=FLAGS.num_atoms,
            compile_seconds=report.compile_seconds,
            flops_per_chip=report.flops,
            bytes_accessed_per_chip=report.bytes_accessed,
            memory_per_chip=report.memory,
            roofline=report.roofline,
            chip=chip.name if chip else None,
        )
    items = hlo_traffic.accesses(hlo)
    rows = hlo_traffic.by_source(items, FLAGS.depth)
    phases = {}
    for item in items:
        phase = hlo_traffic.phase(item.op_name)
        phases[phase] = phases.get(phase, 0) + item.bytes
    entry.update(
        traffic_estimate=sum(item.bytes for item in items),
        traffic_by_phase=dict(sorted(phases.items(), key=lambda kv: -kv[1])),
        traffic=rows[: FLAGS.rows],
    )
    path = pathlib.Path(FLAGS.out)
    results = json.loads(path.read_text()) if path.exists() else {}
    results[FLAGS.label] = entry
    path.write_text(json.dumps(results, indent=1) + "\n")
    xla = entry.get("bytes_accessed_per_chip")
    print(
        f"{FLAGS.label}: XLA {xla / 1e9:.2f} GB per chip, " if xla else f"{FLAGS.label}: ",
        f"estimate {entry['traffic_estimate'] / 1e9:.2f} GB; by phase "
        + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in entry["traffic_by_phase"].items()),
    )
    for row in rows[:12]:
        print(f"  {row['bytes'] / 1e9:7.3f} GB  {row['phase']:<9} {row['source']} ({row['count']})")
    print(f"Wrote {path}")


if __name__ == "__main__":
    app.run(main)
