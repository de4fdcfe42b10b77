"""Sizes a pretraining run for a TPU slice before anyone rents it: compiles every program the run
compiles for that slice, here, on a CPU machine, and reports per chip what each needs and the
least time XLA's cost model allows it.

  moleblend aot --config=configs/base.py --topology=v5e-256 --buckets=64
  moleblend aot --config=configs/base.py --topology=v5e:4x4 --num_slices=2 \
      --config.batch_size=512 --out=sizing.json
  moleblend aot --config=configs/base.py:tiny --topology=cpu-8   # no libtpu needed

Topologies: MaxText's names (v4-32, v5p-128: TensorCores; v5e-256, v6e-64: chips), libtpu's
(v5e:16x16) or cpu-N. TPU topologies need the TPU compiler: pip install -e '.[tpu]'. Nothing
here is a timing: memory is the compiler's, FLOPs and bytes are XLA's cost model, and the step
time is the roofline lower bound max(FLOPs / peak, bytes / HBM bandwidth) with the chip's public
peak figures. The same: python experiments/aot_compile.py FLAGS.
"""

import dataclasses
import json
import os
import pathlib
import sys

from absl import app, flags
from ml_collections import config_flags

from moleblend_jax.errors import exit_on_user_error

FLAGS = flags.FLAGS


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "Config file, optionally FILE.py:variant.")
    flags.DEFINE_string("topology", None, "v4-32, v5e-256, v5p-128, v6e-64, v5e:16x16 or cpu-N.")
    flags.DEFINE_integer("num_slices", 1, "Slices joined over DCN (data parallel across them).")
    flags.DEFINE_list(
        "buckets", None, "Atom counts to compile train steps for (default: the run's)."
    )
    programs = ["init", "train_step", "eval_step"]  # train/aot.PROGRAMS (jax not imported yet).
    flags.DEFINE_multi_enum("programs", programs, programs, "Programs to compile (default: all).")
    flags.DEFINE_string("out", None, "Also write the report as JSON here.")
    flags.mark_flags_as_required(["config", "topology"])


def compile_only_devices(topology: str) -> None:
    """Before jax starts its backends: CPU only (never probe for, or lock, an accelerator of
    this machine), with N devices for a cpu-N topology (XLA reads XLA_FLAGS once)."""
    import jax

    jax.config.update("jax_platforms", "cpu")
    if topology.startswith("cpu-"):
        flag = f"--xla_force_host_platform_device_count={topology.removeprefix('cpu-')}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()


NOT_A_TIMING = (
    "Nothing here is a timing: memory is the compiler's, FLOPs and bytes accessed are XLA's cost "
    "model, and bound_s is the roofline lower bound max(FLOPs / peak, bytes / HBM bandwidth)."
)


@exit_on_user_error
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    compile_only_devices(FLAGS.topology)
    from moleblend_jax.train import aot

    config = FLAGS.config
    devices = aot.topology_devices(FLAGS.topology, FLAGS.num_slices)
    buckets = [int(b) for b in FLAGS.buckets] if FLAGS.buckets else None
    facts, reports = aot.compile_run(config, devices, buckets, progress=print, which=FLAGS.programs)
    report = {
        "topology": FLAGS.topology,
        "num_slices": FLAGS.num_slices,
        "config": sys.argv[1:],
        "total_steps": config.total_steps,
        "note": NOT_A_TIMING,
        **facts,
        "programs": [_with_pod_hours(dataclasses.asdict(r), config.total_steps) for r in reports],
    }
    print(aot_table(report))
    if FLAGS.out:
        path = pathlib.Path(FLAGS.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"Wrote {path}")


def _with_pod_hours(program: dict, total_steps: int) -> dict:
    """Train steps: the slice's hours for `total_steps` at the roofline bound."""
    if program["name"] == "train_step" and program["roofline"]:
        program["pod_hours_at_bound"] = total_steps * program["roofline"]["bound_s"] / 3600
    return program


def aot_table(report: dict) -> str:
    """The report as a text table, one program per row, then notes and settings that fit."""
    gib = lambda n: f"{n / 2**30:.2f}"
    chip = report["chip"]
    hbm = gib(chip["hbm_bytes"]) if chip else "?"
    lines = [
        f"{report['topology']} x {report['num_slices']} slice(s): {report['devices']} x "
        f"{report['device_kind']}, mesh {report['mesh']}, {report['hosts']} host(s), global "
        f"batch {report['global_batch']} = {report['molecules_per_device']} per chip "
        f"({report['dtype']}, grad_accum {report['grad_accum_steps']}, remat {report['remat']})",
        f"{'program':<20} {'args':>6} {'temp':>6} {'out':>6} {'total':>6} {'HBM':>6} {'fits':>4} "
        f"{'TFLOP':>7} {'GB acc':>7} {'bound ms':>9} {'binds':>7} {'MFU<=':>6} {'mol/s':>9} "
        f"{'pod-h':>7}",
    ]
    for p in report["programs"]:
        mem, roof = p["memory"], p["roofline"]
        fits = {True: "yes", False: "NO", None: "?"}[p["fits"]]
        mol_s = f"{p['molecules_per_second']:,.0f}" if p["molecules_per_second"] else ""
        pod_hours = f"{p['pod_hours_at_bound']:,.1f}" if "pod_hours_at_bound" in p else ""
        lines.append(
            f"{(p['name'] + ' ' + p['batch_shape']).strip():<20} {gib(mem['arguments']):>6} "
            f"{gib(mem['temporaries']):>6} {gib(mem['outputs']):>6} {gib(mem['total']):>6} "
            f"{hbm:>6} {fits:>4} {p['flops'] / 1e12:>7.3f} {p['bytes_accessed'] / 1e9:>7.2f} "
            + (
                f"{roof['bound_s'] * 1e3:>9.2f} {roof['binds']:>7} {roof['mfu_ceiling']:>6.1%} "
                if roof
                else f"{'':>9} {'':>7} {'':>6} "
            )
            + f"{mol_s:>9} {pod_hours:>7}"
        )
    lines.append("Memory in GiB per chip; FLOPs and bytes per chip per step (XLA's cost model).")
    for p in report["programs"]:
        kinds = ", ".join(
            f"{kind} x{c['count']} ({c['bytes'] / 2**20:.1f} MiB)"
            for kind, c in p["collectives"].items()
        )
        lines.append(f"  {p['name']} {p['batch_shape']}: collectives {kinds or 'none'}")
        biggest = p["largest_buffers"][:3]
        lines.append(
            "    largest buffers: "
            + "; ".join(f"{b['bytes'] / 2**20:.0f} MiB {b['shape']} ({b['op']})" for b in biggest)
        )
        lines.append(
            "    most traffic: "
            + "; ".join(
                f"{t['bytes'] / 1e9:.2f} GB {t['phase']} {t['source']}" for t in p["traffic"][:4]
            )
        )
        if p["fits"] is False:
            lines.append(
                f"  {p['name']} {p['batch_shape']} does NOT fit {hbm} GiB per chip; settings that"
                " fit: " + ("; ".join(p["settings_that_fit"]) or "a smaller model")
            )
    lines.append(report["note"])
    return "\n".join(lines)
