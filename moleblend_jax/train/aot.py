"""Ahead-of-time compilation of a pretraining run for a device topology nobody has rented.

`compile_run` compiles every program the pretraining loop compiles (state initialisation, a
train step per padding bucket, the held-out eval step) through the loop's own builders
(train/programs.py) for the devices of `topology_devices`: compile-only TPU devices from libtpu
(no TPU needed) or fake CPU devices. Each program is reported per chip: memory against the
chip's HBM, XLA's FLOPs and bytes accessed, the roofline bound on its time, its collectives
and its largest buffers. Nothing here is a timing: the bounds are lower bounds from XLA's cost
model and the chip's public peak figures (train/hardware.py).
"""

import dataclasses
import os
import re
import time
import types
from collections.abc import Sequence

import jax
import ml_collections

from moleblend_jax.errors import UserError
from moleblend_jax.model import platform as model_platform
from moleblend_jax.train import hardware, hlo_stats, hlo_traffic, memory, programs, sharding
from moleblend_jax.train.compiled import xla_cost

# MaxText's accelerator names (MaxText/accelerator_to_spec_map.py): v5e-N and v6e-N count chips,
# v4-N and v5p-N TensorCores (two per chip). Chips -> the topology's shape.
_SHAPES_2D = dict(
    zip((1, 4, 8, 16, 32, 64, 128, 256), "1x1 2x2 2x4 4x4 4x8 8x8 8x16 16x16".split(), strict=True)
)
_SHAPES_3D = dict(
    zip(
        (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
        "2x2x1 2x2x2 2x2x4 2x4x4 4x4x4 4x4x8 4x8x8 8x8x8 8x8x16 8x16x16 16x16x16".split(),
        strict=True,
    )
)
# Generation -> (libtpu's topology prefix, TensorCores per named unit, chip config).
_GENERATIONS = {
    "v4": ("v4", 2, "megacore"),
    "v5p": ("v5", 2, "megacore"),
    "v5e": ("v5e", 1, "default"),
    "v6e": ("v6e", 1, "default"),
}


def tpu_topology_name(name: str) -> str:
    """'v5e-256' (MaxText's names) or 'v5e:16x16' -> libtpu's topology name ('v5e:16x16')."""
    if ":" in name:
        generation, shape = name.split(":", 1)
        generation = "v5p" if generation == "v5" else generation
    else:
        match = re.fullmatch(r"(v4|v5e|v5p|v6e)-(\d+)", name)
        if not match:
            raise UserError(
                f"Unknown topology {name!r}: use e.g. v4-32, v5e-256, v5p-128, v6e-64, "
                "v5e:16x16 or cpu-8."
            )
        generation, count = match.group(1), int(match.group(2))
        chips = count // _GENERATIONS[generation][1]
        shapes = _SHAPES_3D if _GENERATIONS[generation][2] == "megacore" else _SHAPES_2D
        if chips not in shapes:
            raise UserError(f"No {generation} slice of {count}: choose from {_names(generation)}.")
        shape = shapes[chips]
    if generation not in _GENERATIONS:
        raise UserError(f"Unknown TPU generation {generation!r} in {name!r}.")
    return f"{_GENERATIONS[generation][0]}:{shape}"


def _names(generation: str) -> str:
    per_chip = _GENERATIONS[generation][1]
    shapes = _SHAPES_3D if per_chip == 2 else _SHAPES_2D
    return ", ".join(f"{generation}-{chips * per_chip}" for chips in shapes)


def topology_devices(name: str, num_slices: int = 1) -> list[jax.Device]:
    """The devices of a named topology: compile-only TPU devices from libtpu, or for 'cpu-N'
    the first N CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count must allow N)."""
    if name.startswith("cpu-"):
        count = int(name.removeprefix("cpu-"))
        if num_slices != 1:
            raise UserError("A cpu-N topology has one slice.")
        devices = jax.devices("cpu")
        if len(devices) < count:
            raise UserError(
                f"{name} needs {count} CPU devices, this process has {len(devices)}: set "
                f"XLA_FLAGS=--xla_force_host_platform_device_count={count} before starting."
            )
        return devices[:count]
    topology_name = tpu_topology_name(name)
    shape = [int(d) for d in topology_name.split(":")[1].split("x")]
    megacore = topology_name.startswith(("v4:", "v5:"))
    # libtpu takes a per-machine lock unless told another process may hold it too.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies

    try:
        topology = topologies.get_topology_desc(
            platform="tpu",
            topology_name=topology_name,
            chip_config_name="megacore" if megacore else "default",
            chips_per_host_bounds=(2, 2, 1),
            num_slices=num_slices,
            wrap=tuple(len(shape) == 3 and min(shape) >= 4 or d >= 16 for d in (*shape, 1)[:3]),
        )
    except (ImportError, RuntimeError) as error:
        raise UserError(
            f"Cannot make TPU devices for {name} ({error}); install the TPU compiler with "
            "pip install -e '.[tpu]' (libtpu), or use a cpu-N topology."
        ) from error
    return list(topology.devices)


@dataclasses.dataclass
class ProgramReport:
    """One compiled program, per chip."""

    name: str
    batch_shape: str  # "molecules x atoms" of the global batch, "" for init.
    compile_seconds: float
    memory: dict[str, int]  # arguments, outputs, aliased, temporaries, total (bytes).
    fits: bool | None  # Against the chip's HBM; None when the chip is unknown.
    flops: float
    bytes_accessed: float
    roofline: dict[str, float | str]  # compute_s, memory_s, bound_s, binds, mfu_ceiling.
    collectives: dict[str, dict[str, int]]  # kind -> {count, bytes}; dcn-* cross slices.
    largest_buffers: list[dict]  # [{bytes, shape, op}] of the largest instruction results.
    # Where the bytes go (train/hlo_traffic.py): [{phase, source, bytes, count}], largest first.
    traffic: list[dict] = dataclasses.field(default_factory=list)
    molecules_per_second: float | None = None  # Train steps: the bound's throughput.
    settings_that_fit: list[str] = dataclasses.field(default_factory=list)
    refused: str = ""  # The compiler's message when it refused the program (out of HBM).


PROGRAMS = ("init", "train_step", "eval_step")
TRAFFIC_ROWS = 12  # The largest traffic sources kept per program.


def compile_run(
    config: ml_collections.ConfigDict,
    devices: Sequence[jax.Device],
    buckets: Sequence[int] | None = None,
    progress=print,
    which: Sequence[str] = PROGRAMS,
    hlo_texts: list[str] | None = None,
) -> tuple[dict, list[ProgramReport]]:
    """Compiles the run's programs for `devices`; returns (facts about the run, reports).

    `buckets` limits the train steps compiled (default: those the loop would compile, i.e.
    only the largest bucket when the devices span several hosts); `which` the programs.
    Each compiled program's optimized HLO text is appended to `hlo_texts` when given.
    """
    mesh = sharding.make_mesh(config.mesh, devices)
    num_devices = len(devices)
    if config.batch_size % num_devices:
        raise UserError(
            f"config.batch_size={config.batch_size} does not split over {num_devices} devices."
        )
    num_hosts = len({d.process_index for d in devices})
    run_buckets = programs.train_buckets(config, num_hosts)
    buckets = tuple(int(b) for b in buckets) if buckets else run_buckets
    built = programs.build_programs(config, mesh)
    chip = hardware.chip_of(devices[0])
    facts = {
        "devices": num_devices,
        "device_kind": devices[0].device_kind,
        "slices": sharding.num_slices(devices),
        "hosts": num_hosts,
        "mesh": dict(zip(mesh.axis_names, mesh.devices.shape, strict=True)),
        "global_batch": config.batch_size,
        "molecules_per_device": config.batch_size // num_devices,
        "grad_accum_steps": config.grad_accum_steps,
        "remat": config.model.remat,
        "dtype": config.model.dtype,
        "buckets_the_run_compiles": list(run_buckets),
        "chip": dataclasses.asdict(chip) if chip else None,
    }
    layout = built.layout
    key = jax.ShapeDtypeStruct(layout.init_rng.shape, layout.init_rng.dtype)
    jobs = [("init", "", lambda: built.layout.init_program.lower(key))]
    for num_atoms in buckets:
        batch = programs.batch_spec(config.batch_size, num_atoms, mesh)
        jobs.append(
            (
                "train_step",
                f"{config.batch_size}x{num_atoms}",
                lambda batch=batch: built.train_step.lower(layout.abstract, batch),
            )
        )
    eval_batch = programs.batch_spec(config.batch_size, max(buckets), mesh)
    eval_rng = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=sharding.replicated(mesh))
    jobs.append(
        (
            "eval_step",
            f"{config.batch_size}x{max(buckets)}",
            lambda: built.eval_step.lower(layout.abstract.params, eval_batch, eval_rng),
        )
    )
    reports = []
    for name, shape, lower in [job for job in jobs if job[0] in which]:
        progress(f"Compiling {name} {shape} for {num_devices} x {devices[0].device_kind} ...")
        start = time.perf_counter()
        try:
            with model_platform.compiling_for(devices[0].platform):
                compiled = lower().compile()
        except jax.errors.JaxRuntimeError as error:
            if "RESOURCE_EXHAUSTED" not in str(error):
                raise
            analysis, report = _refused(name, shape, str(error))
        else:
            seconds = round(time.perf_counter() - start, 1)
            analysis, hlo = compiled.memory_analysis(), compiled.as_text()
            report = analyse(name, shape, compiled, analysis, hlo, mesh, chip)
            if hlo_texts is not None:
                hlo_texts.append(hlo)
            report.compile_seconds = seconds
        if name == "train_step" and report.roofline:
            report.molecules_per_second = config.batch_size / report.roofline["bound_s"]
        if report.fits is False:
            report.settings_that_fit = memory.settings_that_fit(
                analysis,
                chip.hbm_bytes if chip else report.memory["total"],
                batch_size=config.batch_size,
                num_devices=num_devices,
                grad_accum_steps=config.grad_accum_steps,
                remat=config.model.remat,
            )
        reports.append(report)
    return facts, reports


def _refused(name: str, shape: str, message: str) -> tuple[object, ProgramReport]:
    """(memory analysis, report) of a program the TPU compiler refused for want of HBM: the
    temporaries its message names (e.g. "HLO temporaries (53.08G) exceeds available HBM")."""
    match = re.search(r"temporaries \(([\d.]+)([KMGT])\)", message)
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    temporaries = int(float(match.group(1)) * scale[match.group(2)]) if match else 0
    analysis = types.SimpleNamespace(
        argument_size_in_bytes=0,
        output_size_in_bytes=0,
        alias_size_in_bytes=0,
        temp_size_in_bytes=temporaries,
    )
    report = ProgramReport(
        name=name,
        batch_shape=shape,
        compile_seconds=0.0,
        memory=_memory_fields(analysis),
        fits=False,
        flops=0.0,
        bytes_accessed=0.0,
        roofline={},
        collectives={},
        largest_buffers=[],
        refused=message.splitlines()[0][:300],
    )
    return analysis, report


def _memory_fields(analysis) -> dict[str, int]:
    """A memory analysis as the report's fields, per chip (bytes)."""
    return {
        "arguments": analysis.argument_size_in_bytes,
        "outputs": analysis.output_size_in_bytes,
        "aliased": analysis.alias_size_in_bytes,
        "temporaries": analysis.temp_size_in_bytes,
        "total": memory.step_bytes(analysis),
    }


def analyse(name, shape, compiled, analysis, hlo, mesh, chip) -> ProgramReport:
    """A ProgramReport from a compiled program, its memory `analysis`, costs and optimized
    HLO text `hlo`."""
    mem = _memory_fields(analysis)
    cost = xla_cost(compiled)
    flops, bytes_accessed = cost["flops"], cost["bytes accessed"]
    return ProgramReport(
        name=name,
        batch_shape=shape,
        compile_seconds=0.0,
        memory=mem,
        fits=None if chip is None else mem["total"] <= chip.hbm_bytes,
        flops=flops,
        bytes_accessed=bytes_accessed,
        roofline=roofline(flops, bytes_accessed, chip),
        collectives=hlo_stats.collectives(hlo, slice_of_device(mesh)),
        largest_buffers=hlo_stats.largest_buffers(hlo),
        traffic=hlo_traffic.by_source(hlo_traffic.accesses(hlo))[:TRAFFIC_ROWS],
    )


def roofline(flops: float, bytes_accessed: float, chip: hardware.Chip | None) -> dict:
    """The lower bound on a program's time: max(FLOPs / peak, bytes / bandwidth), and which
    side binds. Empty for an unknown chip."""
    if chip is None:
        return {}
    compute, traffic = flops / chip.bf16_flops, bytes_accessed / chip.hbm_bytes_per_s
    return {
        "compute_s": compute,
        "memory_s": traffic,
        "bound_s": max(compute, traffic),
        "binds": "memory" if traffic > compute else "compute",
        "mfu_ceiling": compute / max(compute, traffic, 1e-30),
    }


def slice_of_device(mesh) -> list[int]:
    """Slice index of each SPMD partition id (the mesh's devices in row-major order)."""
    return [getattr(d, "slice_index", 0) for d in mesh.devices.flat]
