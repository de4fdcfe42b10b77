"""A pretraining run set up before its first step (`train.loop`): mesh, compiled programs, the
state (initialised in its sharded layout, or restored into it), the batch iterator from the
state's step on, the metrics writer and the held-out loss."""

import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
import ml_collections

from moleblend_jax import atomic
from moleblend_jax import model as model_lib
from moleblend_jax.model import flops
from moleblend_jax.train import hardware, inputs, sharding, telemetry
from moleblend_jax.train import state as state_lib
from moleblend_jax.train.checkpoint import Checkpointer
from moleblend_jax.train.compiled import CompiledPerShape
from moleblend_jax.train.evaluate import evaluate
from moleblend_jax.train.memory import check_fits
from moleblend_jax.train.metrics_writer import MetricWriter
from moleblend_jax.train.programs import build_programs, train_buckets


class Run(NamedTuple):
    """What the step loop needs, set up before it."""

    mesh: jax.sharding.Mesh
    state: state_lib.TrainState
    start_step: int
    batches: Iterator[dict]
    train_step: CompiledPerShape
    held_out: Callable | None
    checkpointer: Checkpointer
    writer: MetricWriter
    step_cost: Callable[[dict], dict]  # Global batch just run -> StepClock.step_done's arguments.
    peak_flops: float | None  # Of all devices together (FLOP/s), for MFU.


def set_up_run(
    config: ml_collections.ConfigDict,
    workdir,
    data: inputs.PretrainingData,
    checkpointer: Checkpointer,
) -> Run:
    """Mesh, model, the state (restored straight into its sharded layout when a checkpoint
    exists, else initialised in it), the batch iterator from the state's step on, and the
    compiled steps."""
    num_processes = jax.process_count()
    buckets = train_buckets(config, num_processes)
    if buckets != tuple(config.data.buckets):
        # Every process must feed the same padded shape at the same step.
        logging.info("Multi-process run: padding every batch to %d atoms.", buckets[-1])
    local_batch_size = config.batch_size // num_processes

    is_writer = jax.process_index() == 0
    mesh = sharding.make_mesh(config.mesh)
    programs = build_programs(config, mesh)
    layout = programs.layout
    logging.info("Parameters: %s", f"{state_lib.count_params(layout.abstract.params):,}")
    if is_writer:  # The sizes the checkpoint needs (moleblend_jax.inference).
        sizes = dataclasses.asdict(model_lib.ModelConfig.coerce(config.model))
        atomic.write_json(workdir / "model_config.json", sizes)
    if checkpointer.latest_step() is None:
        state, start_step = layout.init(), 0
    else:
        state = checkpointer.restore(layout.abstract)
        start_step = int(jax.device_get(state.step))
        logging.info("Resumed from step %d in %s", start_step, checkpointer.directory)
    writer = MetricWriter(workdir, enabled=is_writer)
    writer.truncate_after(start_step)
    if data.num_oversize and start_step == 0:
        writer.write(0, {"oversize_dropped": data.num_oversize})

    from moleblend_jax.data import pipeline

    batches = pipeline.make_batches(
        data.train_dir,
        local_batch_size,
        buckets,
        seed=config.seed,
        shuffle=True,
        repeat=True,
        shard_index=jax.process_index(),
        num_shards_total=num_processes,
        start_batch=start_step,
        shuffle_buffer=config.data.shuffle_buffer,
        oversize="skip" if config.data.drop_oversize else "error",
    )
    train_step = CompiledPerShape(
        programs.train_step,
        "train step",
        check_memory=lambda memory, shape: check_fits(
            memory,
            what=f"train step for batch {shape}",
            batch_size=config.batch_size,
            grad_accum_steps=config.grad_accum_steps,
            remat=config.model.remat,
        ),
    )
    held_out = _held_out_loss(config, programs, data.eval_dir, mesh, buckets, local_batch_size)

    def step_cost(batch: dict) -> dict:
        model_flops = flops.train_step_flops(
            config.model, config.batch_size, batch["atom_mask"].shape[1]
        )
        return telemetry.step_cost(
            train_step, batch, molecules=config.batch_size, model_flops=model_flops
        )

    return Run(
        mesh,
        state,
        start_step,
        batches,
        train_step,
        held_out,
        checkpointer,
        writer,
        step_cost,
        hardware.peak_flops_of_devices(jax.devices(), config.model.dtype),
    )


def _held_out_loss(config, programs, eval_dir, mesh, buckets, local_batch_size):
    """params -> {"eval_loss": ..., ...} over the first `config.eval_batches` batches of
    `eval_dir` (the same ones every time), or None without held-out data."""
    if not (eval_dir and config.eval_batches):
        logging.info("No held-out data (config.data.eval_dir): no held-out loss.")
        return None
    from moleblend_jax.data import pipeline

    eval_step = CompiledPerShape(programs.eval_step, "eval step")
    keys = jax.random.split(jax.random.PRNGKey(config.seed + 1), config.eval_batches)
    rngs = [jax.device_put(key, sharding.replicated(mesh)) for key in keys]  # Explicit, once.

    def held_out(params) -> dict[str, float]:
        batches = pipeline.make_batches(
            eval_dir,
            local_batch_size,
            buckets,
            seed=0,
            shuffle=False,
            repeat=True,  # Every process yields eval_batches batches, however its shards fall.
            shard_index=jax.process_index(),
            num_shards_total=jax.process_count(),
        )
        return evaluate(
            eval_step, params, itertools.islice(batches, config.eval_batches), rngs, mesh
        )

    return held_out
