"""Train-step benchmark: throughput, compile time, memory, parameters, FLOPs (and on an
accelerator mfu from the model's FLOPs, model/flops.py, and hfu from XLA's).

  python benchmarks/benchmark.py --out=benchmarks/train_step_cpu.json
  python benchmarks/benchmark.py --out=FILE.json --configs=tiny --dtypes=float32 --steps=20

Times the full pretraining step (blended forward, four losses, backward, clip, AdamW) on
a batch of real molecules (bundled ESOL SMILES with RDKit conformers), padded to
--num_atoms. Throughput is the median over timed steps after compilation.
"""

import os

from moleblend_jax.cli.startup import preamble

if __name__ == "__main__":  # First thing: glibc reads malloc settings only at start-up.
    preamble(malloc_tunables=True)

import json
import pathlib
import platform
import resource
import time

import jax
import numpy as np
from absl import app, flags
from torch_reference.client import CONFIGS as TORCH_CONFIGS
from torch_reference.client import TorchSteps

from moleblend_jax.configs import base
from moleblend_jax.train import hardware
from moleblend_jax.train.compiled import xla_cost
from moleblend_jax.train.memory import step_bytes
from moleblend_jax.train.profiling import ms_per_module

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output JSON file.", required=True)
flags.DEFINE_list("configs", ["tiny", "base"], "Variants of configs/base.py to time.")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Activation dtypes to time.")
flags.DEFINE_integer("batch_size", 32, "Molecules per step.")
flags.DEFINE_integer("num_atoms", 32, "Padded atom count.")
flags.DEFINE_integer("steps", 10, "Timed steps per variant and round (after 2 warm-up steps).")
flags.DEFINE_integer("rounds", 1, "Rounds: every variant of a config runs --steps once per round.")
flags.DEFINE_bool(
    "torch",
    False,
    "Also time the PyTorch reference (benchmarks/torch_reference, `pip install -e .[bench]`), "
    "its steps alternated with ours in the same rounds.",
)
flags.DEFINE_list("torch_modes", ["eager", "bf16"], "PyTorch modes: eager (fp32), bf16 autocast.")
flags.DEFINE_bool(
    "compile_only",
    False,
    "Only compile and report the step's FLOPs and memory (arguments, temporaries, outputs): "
    "what a batch needs, without running it.",
)
flags.DEFINE_float(
    "attention_dropout",
    None,
    "Override config.model.attention_dropout (0 lets GPUs use cuDNN's fused attention).",
)
flags.DEFINE_bool(
    "remat",
    False,
    "Set config.model.remat: each Transformer layer's activations are recomputed in the "
    "backward pass instead of stored (less memory, about one more forward).",
)
flags.DEFINE_string(
    "profile_dir",
    None,
    "If set, trace 3 steps with jax.profiler into this directory and add the time per model "
    "module (forward / backward) to the JSON.",
)

REPO = pathlib.Path(__file__).resolve().parents[1]


def real_batch(batch_size: int, num_atoms: int) -> dict[str, np.ndarray]:
    """The first `batch_size` bundled ESOL molecules with 8..num_atoms heavy atoms (repeated
    when ESOL has fewer)."""
    from moleblend_jax.chem import SkipMolecule, smiles_to_record
    from moleblend_jax.data import pad_batch
    from moleblend_jax.finetune import catalog

    smiles, _, _ = catalog.load_dataset("esol")
    chosen = []
    for i, smi in enumerate(smiles):
        try:
            record = smiles_to_record(smi, i, conformers="rdkit")
        except SkipMolecule:
            continue
        if 8 <= len(record["atom_features"]) <= num_atoms:
            chosen.append(record)
        if len(chosen) == batch_size:
            break
    chosen = [chosen[i % len(chosen)] for i in range(batch_size)]
    return pad_batch(chosen, num_atoms, batch_size)


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "device_count": jax.device_count(),
        "load_average": os.getloadavg(),  # Other jobs on the machine skew every timing.
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
    }


class JaxStep:
    """Our compiled pretraining step for one (config variant, dtype), ready to time."""

    def __init__(self, variant: str, dtype: str, batch_np: dict):
        from moleblend_jax.model import flops
        from moleblend_jax.train import programs, sharding
        from moleblend_jax.train import state as state_lib

        config = base.get_config(variant)
        config.model.dtype = dtype
        if FLAGS.attention_dropout is not None:
            config.model.attention_dropout = FLAGS.attention_dropout
        config.model.remat = FLAGS.remat
        self.model_config = config.model
        mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
        built = programs.build_programs(config, mesh)
        self.state = built.layout.init()
        self.batch = sharding.global_batch(batch_np, mesh)
        step_fn = built.train_step
        start = time.perf_counter()
        self.compiled = step_fn.lower(self.state, self.batch).compile()
        compile_s = time.perf_counter() - start
        batch_size, num_atoms = batch_np["atom_mask"].shape
        self.info = {
            "impl": "moleblend_jax",
            "config": variant,
            "dtype": dtype,
            "batch_size": int(batch_size),
            "num_atoms": int(num_atoms),
            "params": int(state_lib.count_params(self.state.params)),
            "attention_dropout": config.model.attention_dropout,
            "remat": config.model.remat,
            "compile_s": round(compile_s, 2),
            "model_flops_per_step": flops.train_step_flops(config.model, batch_size, num_atoms),
            **compiled_costs(self.compiled),
        }
        if not FLAGS.compile_only:
            self.run(2)  # Warm-up.

    def run(self, num_steps: int) -> list[float]:
        """Time `num_steps` steps; -> seconds each."""
        durations = []
        for _ in range(num_steps):
            start = time.perf_counter()
            self.state, metrics = self.compiled(self.state, self.batch)
            jax.block_until_ready(metrics)
            durations.append(time.perf_counter() - start)
        self.loss = float(metrics["loss"])
        return durations


def compiled_costs(compiled) -> dict:
    """XLA's FLOPs and the step's memory (arguments, temporaries, outputs and their sum less
    donated aliases, `compiled_step_bytes`) from the compiled step."""
    result = {"xla_flops_per_step": xla_cost(compiled)["flops"]}
    memory = compiled.memory_analysis()
    if memory is not None:
        result["xla_temp_bytes"] = int(memory.temp_size_in_bytes)
        result["xla_argument_bytes"] = int(memory.argument_size_in_bytes)
        result["xla_output_bytes"] = int(memory.output_size_in_bytes)
        result["xla_alias_bytes"] = int(memory.alias_size_in_bytes)
        result["compiled_step_bytes"] = int(step_bytes(memory))  # What the pre-flight checks.
    return result


def profile_result(step: JaxStep, variant: str, dtype: str) -> dict:
    def run_step():
        step.run(1)

    trace_dir = f"{FLAGS.profile_dir}/{variant}_{dtype}"
    return ms_per_module(step.compiled, run_step, trace_dir)


def peak_memory() -> dict:
    """Peak device memory so far (where the backend reports it) and peak host RSS."""
    result = {}
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        result["peak_device_bytes"] = int(stats["peak_bytes_in_use"])
    result["peak_host_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def summarise(info: dict, durations: list[float], loss: float) -> dict:
    median_s = float(np.median(durations))
    result = {
        **info,
        "step_s_median": round(median_s, 4),
        "step_s_all": [round(d, 4) for d in durations],
        "molecules_per_s": round(info.get("batch_size", FLAGS.batch_size) / median_s, 1),
        "loss": loss,
    }
    # The training loops' names (train/telemetry.py) beside the historical ones.
    result["step_seconds"] = result["step_s_median"]
    result["molecules_per_second"] = result["molecules_per_s"]
    result["input_wait_fraction"] = 0.0  # One batch, already on the device.
    device = jax.devices()[0]
    peak = None if device.platform == "cpu" else hardware.peak_flops(device, info["dtype"])
    if peak and "model_flops_per_step" in info:  # mfu: the model's FLOPs (model/flops.py).
        result["mfu"] = info["model_flops_per_step"] / median_s / peak
    if peak and "xla_flops_per_step" in info:  # hfu: what XLA compiled, recomputation included.
        result["hfu"] = info["xla_flops_per_step"] / median_s / peak
    return result


def time_config(variant: str, batch_np: dict) -> list[dict]:
    """Every dtype of ours (and the PyTorch modes) for one config, steps alternated by round."""
    ours = {dtype: JaxStep(variant, dtype, batch_np) for dtype in FLAGS.dtypes}
    if FLAGS.compile_only:
        return [step.info for step in ours.values()]
    torch_steps = None
    if FLAGS.torch:
        torch_steps = TorchSteps(variant, FLAGS.torch_modes, FLAGS.batch_size, FLAGS.num_atoms)
    names = [("ours", d) for d in ours] + [("torch", m) for m in (FLAGS.torch_modes * FLAGS.torch)]
    durations = {name: [] for name in names}
    losses = {}
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for round_index in range(FLAGS.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:  # Each round starts with another variant.
            if name[0] == "ours":
                durations[name] += ours[name[1]].run(FLAGS.steps)
                losses[name] = ours[name[1]].loss
            else:
                steps, losses[name] = torch_steps.run(name[1], FLAGS.steps)
                durations[name] += steps
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    results = []
    for impl, mode in names:
        if impl == "ours":
            result = summarise(ours[mode].info, durations[impl, mode], losses[impl, mode])
            # Pages the host touched afresh per step; see moleblend_jax/host_allocator.py.
            result["host_page_faults_per_step"] = round(faults / sum(map(len, durations.values())))
            result.update(peak_memory())
            if FLAGS.profile_dir:
                result["profile_ms_per_step"] = profile_result(ours[mode], variant, mode)
        else:
            info = {**torch_steps.info, "dtype": mode, "batch_size": FLAGS.batch_size}
            result = summarise(info, durations[impl, mode], losses[impl, mode])
        results.append(result)
    if torch_steps:
        torch_steps.close()
    return results


def ratios(results: list[dict]) -> dict:
    """Same-run throughput ratios per config: ours bf16 vs ours fp32 and vs PyTorch."""
    out = {}
    for config in FLAGS.configs:
        rate = {}
        for r in results:
            if r["config"] in (config, TORCH_CONFIGS.get(config)) and "molecules_per_s" in r:
                rate[f"{'ours' if r['impl'] == 'moleblend_jax' else 'torch'} {r['dtype']}"] = r[
                    "molecules_per_s"
                ]
        pairs = {
            "ours bfloat16 / ours float32": ("ours bfloat16", "ours float32"),
            "ours bfloat16 / torch bf16": ("ours bfloat16", "torch bf16"),
            "ours float32 / torch eager": ("ours float32", "torch eager"),
        }
        out[config] = {
            k: round(rate[a] / rate[b], 3) for k, (a, b) in pairs.items() if a in rate and b in rate
        }
        ours_best = max((v for k, v in rate.items() if k.startswith("ours")), default=None)
        torch_best = max((v for k, v in rate.items() if k.startswith("torch")), default=None)
        if ours_best and torch_best:
            out[config]["ours best / torch best"] = round(ours_best / torch_best, 3)
    return out


def main(argv):
    del argv
    batch_np = real_batch(FLAGS.batch_size, FLAGS.num_atoms)
    results = []
    for variant in FLAGS.configs:
        for result in time_config(variant, batch_np):
            print(json.dumps({k: v for k, v in result.items() if k != "step_s_all"}))
            results.append(result)
    summary = {"machine": machine_info(), "ratios": ratios(results), "results": results}
    summary["machine"]["matmul_peak_flops_measured"] = {
        dtype: round(hardware.measured_matmul_flops(dtype, size=2048, repeats=10) / 1e9, 1) * 1e9
        for dtype in FLAGS.dtypes
    }
    print(json.dumps(summary["ratios"]))
    out = pathlib.Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
