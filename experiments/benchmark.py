"""Train-step benchmark: throughput, compile time, memory, parameters (and FLOPs/MFU on GPU).

  python experiments/benchmark.py --out=benchmarks/train_step_cpu.json
  python experiments/benchmark.py --out=FILE.json --configs=tiny --dtypes=float32 --steps=20

Times the full pretraining step (blended forward, four losses, backward, clip, AdamW) on
a batch of real molecules (bundled ESOL SMILES with RDKit conformers), padded to
--num_atoms. Throughput is the median over timed steps after compilation.
"""

import os

from moleblend_jax.host_allocator import reexec_with_malloc_tunables

if __name__ == "__main__":  # First thing: glibc reads malloc settings only at start-up.
    reexec_with_malloc_tunables()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import collections  # noqa: E402
import glob  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from moleblend_jax.configs import base  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output JSON file.", required=True)
flags.DEFINE_list("configs", ["tiny", "base"], "Variants of configs/base.py to time.")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Activation dtypes to time.")
flags.DEFINE_integer("batch_size", 32, "Molecules per step.")
flags.DEFINE_integer("num_atoms", 32, "Padded atom count.")
flags.DEFINE_integer("steps", 10, "Timed steps (after 2 warm-up steps).")
flags.DEFINE_string(
    "profile_dir",
    None,
    "If set, trace 3 steps with jax.profiler into this directory and add the time per model "
    "module (forward / backward) to the JSON.",
)

REPO = pathlib.Path(__file__).resolve().parents[1]
# Peak dense throughput used for MFU, by device kind substring and dtype (FLOP/s).
PEAK_FLOPS = {
    "H100": {"bfloat16": 989e12, "float32": 67e12},
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
}


def real_batch(batch_size: int, num_atoms: int) -> dict[str, np.ndarray]:
    """The first `batch_size` bundled ESOL molecules with 8..num_atoms heavy atoms."""
    from moleblend_jax.chem import SkipMolecule, smiles_to_record
    from moleblend_jax.data import pad_batch
    from moleblend_jax.finetune import datasets

    smiles, _, _ = datasets.load_dataset("esol")
    chosen = []
    for i, smi in enumerate(smiles):
        try:
            record = smiles_to_record(smi, i, coords="rdkit")
        except SkipMolecule:
            continue
        if 8 <= len(record["atom_features"]) <= num_atoms:
            chosen.append(record)
        if len(chosen) == batch_size:
            break
    return pad_batch(chosen, num_atoms, batch_size)


def measured_matmul_flops(dtype: str = "float32", size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of one large square matmul on the default device (median): the practical peak
    a compute-bound train step can approach here."""
    import jax.numpy as jnp

    a = jnp.ones((size, size), dtype)
    matmul = jax.jit(jnp.matmul)
    matmul(a, a).block_until_ready()
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        durations.append(time.perf_counter() - start)
    return 2 * size**3 / float(np.median(durations))


def profile_by_module(compiled, run_step, trace_dir: str, num_steps: int = 3) -> dict:
    """ms per step spent in each top-level model module, forward and backward, from a
    jax.profiler trace of `num_steps` calls of `run_step`.

    Kernels are mapped to modules through the op_name metadata of the compiled HLO; the sum
    can exceed the step time where the runtime runs independent kernels concurrently.
    """
    op_names = {}
    for match in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*$", compiled.as_text(), re.M):
        name = re.search(r'op_name="([^"]*)"', match.group(0))
        if name:
            op_names[match.group(1)] = name.group(1)
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(num_steps):
            run_step()
    trace_file = max(
        glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True), key=os.path.getmtime
    )
    with gzip.open(trace_file) as f:
        events = json.load(f)["traceEvents"]
    totals = collections.Counter()
    for event in events:
        op_name = op_names.get(event.get("name")) if event.get("ph") == "X" else None
        if op_name is None:
            continue
        op_name = op_name.split("/", 1)[-1]  # Drop "jit(train_step)".
        direction = "backward" if op_name.startswith("transpose(") else "forward"
        parts = [p for p in re.split(r"[/()]", op_name) if p]
        parts = [p for p in parts if p not in ("transpose", "jvp", "MoleBlend", "encoder")]
        module = re.sub(r"^layer_\d+$", "transformer_layers", parts[0]) if parts else "other"
        if not module.endswith(("_head", "_bias", "_basis", "_embed", "layers", "centrality")):
            module = "losses_optimizer_other"
        totals[f"{module} ({direction})"] += event["dur"] / 1000 / num_steps
    return {k: round(v, 1) for k, v in totals.most_common()}


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


def time_step(variant: str, dtype: str, batch_np: dict) -> dict:
    from moleblend_jax import model as model_lib
    from moleblend_jax.train import loop, optim, sharding
    from moleblend_jax.train import state as state_lib
    from moleblend_jax.train.step import jit_train_step, pretraining_loss_fn

    config = base.get_config(variant)
    config.model.dtype = dtype
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
    model = model_lib.MoleBlend(config=config.model)
    schedule, tx = optim.pretraining_optimizer(config)
    example = loop.dummy_batch(1, batch_np["atom_mask"].shape[1])
    layout = state_lib.state_layout(
        model, tx, example, jax.random.PRNGKey(0), mesh, config.mesh.rules
    )
    state, shardings = layout.init(), layout.shardings
    num_params = state_lib.count_params(state.params)
    batch = sharding.global_batch(batch_np, mesh)
    step_fn = jit_train_step(
        pretraining_loss_fn(model, dict(config.loss_weights)), tx, schedule, shardings, mesh
    )
    start = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - start

    for _ in range(2):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    durations = []
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(FLAGS.steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        durations.append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    median_s = float(np.median(durations))
    batch_size = batch_np["atom_mask"].shape[0]
    result = {
        "config": variant,
        "dtype": dtype,
        "batch_size": batch_size,
        "num_atoms": int(batch_np["atom_mask"].shape[1]),
        "params": int(num_params),
        "compile_s": round(compile_s, 2),
        "step_s_median": round(median_s, 4),
        "step_s_all": [round(d, 4) for d in durations],
        "molecules_per_s": round(batch_size / median_s, 1),
        # Pages the host touched afresh per step; see moleblend_jax/host_allocator.py.
        "host_page_faults_per_step": round(faults / FLAGS.steps),
        "loss": float(metrics["loss"]),
    }
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    if cost and "flops" in cost:
        result["xla_flops_per_step"] = float(cost["flops"])
    memory = compiled.memory_analysis()
    if memory is not None:
        result["xla_temp_bytes"] = int(memory.temp_size_in_bytes)
        result["xla_argument_bytes"] = int(memory.argument_size_in_bytes)
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        result["peak_device_bytes"] = int(stats["peak_bytes_in_use"])
    result["peak_host_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if FLAGS.profile_dir:

        def run_step():
            nonlocal state
            state, step_metrics = compiled(state, batch)
            jax.block_until_ready(step_metrics)

        trace_dir = f"{FLAGS.profile_dir}/{variant}_{dtype}"
        result["profile_ms_per_step"] = profile_by_module(compiled, run_step, trace_dir)
    peak = next((p[dtype] for k, p in PEAK_FLOPS.items() if k in device.device_kind), None)
    if peak and "xla_flops_per_step" in result:
        result["mfu"] = result["xla_flops_per_step"] / median_s / peak
    if "xla_flops_per_step" in result:
        # Throughput if every FLOP ran at the measured large-matmul rate: an upper bound.
        matmul_flops = measured_matmul_flops(dtype)
        result["matmul_peak_flops_measured"] = round(matmul_flops / 1e9, 1) * 1e9
        result["molecules_per_s_at_matmul_peak"] = round(
            batch_size * matmul_flops / result["xla_flops_per_step"], 1
        )
    return result


def main(argv):
    del argv
    batch_np = real_batch(FLAGS.batch_size, FLAGS.num_atoms)
    results = []
    for variant in FLAGS.configs:
        for dtype in FLAGS.dtypes:
            result = time_step(variant, dtype, batch_np)
            print(json.dumps(result))
            results.append(result)
    out = pathlib.Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine_info(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
