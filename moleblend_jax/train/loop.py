"""The pretraining loop: sharded state (fresh or restored), compiled steps, held-out loss,
logging, checkpoints, preemption. Its input comes from `train/inputs.py`."""

import dataclasses
import itertools
import logging
import signal
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
import ml_collections
import numpy as np
import tqdm

from moleblend_jax import atomic, host_allocator
from moleblend_jax import model as model_lib
from moleblend_jax.errors import UserError
from moleblend_jax.model import flops
from moleblend_jax.train import hardware, inputs, optim, sharding, telemetry
from moleblend_jax.train import state as state_lib
from moleblend_jax.train import workdir as workdir_lib
from moleblend_jax.train.checkpoint import Checkpointer
from moleblend_jax.train.compiled import CompiledPerShape
from moleblend_jax.train.evaluate import evaluate
from moleblend_jax.train.finite import NonFiniteError, raise_if_not_finite
from moleblend_jax.train.lock import locked
from moleblend_jax.train.memory import check_fits
from moleblend_jax.train.metrics_writer import MetricWriter, plot_loss_curve
from moleblend_jax.train.paths import as_path
from moleblend_jax.train.profiling import ProfileWindow
from moleblend_jax.train.programs import build_programs, dummy_batch, train_buckets

__all__ = ["dummy_batch", "train_and_evaluate", "validate_config"]

LOSS_TERMS = ("spd", "edge", "direction", "denoise")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fails fast, before any data is built or anything compiled, on settings that cannot work
    (a UserError: one line from the command line)."""
    for key in ("batch_size", "total_steps", "log_every", "checkpoint_every"):
        if config[key] <= 0:
            raise UserError(f"config.{key}={config[key]} must be positive.")
    per_device = sharding.per_device_batch(config.batch_size)
    if config.grad_accum_steps < 1 or per_device % config.grad_accum_steps:
        raise UserError(
            f"config.grad_accum_steps={config.grad_accum_steps} must be >= 1 and divide the "
            f"{per_device} molecules per device (config.batch_size / devices)."
        )
    optim.check_config(config.optimizer)
    missing = set(LOSS_TERMS) - set(config.loss_weights)
    if missing:
        raise UserError(f"config.loss_weights lacks {sorted(missing)}.")
    buckets = tuple(config.data.buckets)
    if list(buckets) != sorted(buckets) or buckets[-1] > config.data.max_atoms:
        raise UserError(f"config.data.buckets={buckets} must be increasing and <= max_atoms.")
    if config.eval_every and config.eval_every % config.log_every:
        raise UserError(
            f"config.eval_every={config.eval_every} must be a multiple of "
            f"config.log_every={config.log_every} (the held-out loss joins that step's line)."
        )


class _Run(NamedTuple):
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Pretrains until `config.total_steps`, resuming from the latest checkpoint in workdir,
    with the held-out loss every `config.eval_every` steps and at the end.

    Returns the metrics of the last logged step.
    """
    validate_config(config)
    _hint_allocator()
    path = as_path(workdir)
    with locked(path, enabled=jax.process_index() == 0):
        return _train(config, path, inputs.prepare_pretraining_data(config, workdir))


def _train(config: ml_collections.ConfigDict, workdir, data: inputs.PretrainingData) -> dict:
    """`train_and_evaluate` once the workdir is locked and the data checked."""
    checkpointer = Checkpointer(
        workdir / "checkpoints", config.checkpoint_every, config.keep_checkpoints
    )
    latest = checkpointer.latest_step()
    workdir_lib.check_config(workdir, config, latest is not None, jax.process_index() == 0)
    if latest is not None and latest >= config.total_steps:
        checkpointer.close()
        logging.warning(
            "%s is at step %d, config.total_steps=%d: nothing to train (raise "
            "--config.total_steps to continue).",
            workdir,
            latest,
            config.total_steps,
        )
        return {"step": latest}
    # Set-up may move small things to the devices implicitly (keys, constants); the step loop
    # may not: its inputs reach the devices only through `global_batch`.
    with jax.transfer_guard("allow"):
        run = _set_up(config, workdir, data, checkpointer)
    state, step = run.state, run.start_step
    preempted, restore_signals = _install_stop_flag()
    progress = tqdm.tqdm(
        total=config.total_steps * config.batch_size,
        initial=step * config.batch_size,
        unit="mol",
        unit_scale=True,
        disable=jax.process_index() != 0,
        dynamic_ncols=True,
    )
    pending = []  # Device metrics since the last log, fetched together to avoid syncs.
    last_logged = {}
    stop_step = config.total_steps
    if config.max_steps_per_run:
        stop_step = min(stop_step, step + config.max_steps_per_run)
    clock = telemetry.StepClock()
    profile = ProfileWindow(config.profile_steps, str(workdir / "profile"))
    stopping = False  # Preempted: save this step and stop.
    try:
        with jax.transfer_guard("disallow"):
            while step < stop_step and not stopping:
                with clock.waiting_for_input():
                    batch = sharding.global_batch(next(run.batches), run.mesh)
                with profile.annotate(step + 1):
                    state, metrics = run.train_step(state, batch)
                step += 1
                profile.after(step, metrics)
                clock.dispatched(metrics, **run.step_cost(batch))
                pending.append((step, metrics))
                progress.update(config.batch_size)
                is_log_step = step % config.log_every == 0 or step == stop_step
                if is_log_step or step % config.checkpoint_every == 0 or preempted():
                    scalars = _fetch_mean(pending)
                    pending = []
                    clock.finish()
                    scalars.update(clock.interval(run.peak_flops))
                    is_eval_step = step == config.total_steps or (
                        config.eval_every and step % config.eval_every == 0
                    )
                    if run.held_out and is_eval_step:
                        scalars.update(run.held_out(state.params))
                    last_logged = _log(step, scalars, run.writer, progress) or last_logged
                stopping = preempted() or run.checkpointer.reached_preemption(step)
                if not stopping and (run.checkpointer.save(step, state) or clock.idle):
                    clock.restart()  # Evaluation and checkpoints are not step time.
            # The last step is always saved, whatever checkpoint_every says.
            run.checkpointer.save(step, state, force=True)
        if stopping:
            logging.warning("Preempted: saved step %d and stopped.", step)
    except NonFiniteError:
        latest = run.checkpointer.latest_step()
        logging.error("Stopped; the last good checkpoint is step %s.", latest)
        raise
    finally:
        restore_signals()
        profile.close()
        progress.close()
        run.checkpointer.close()
        run.writer.close()
    if jax.process_index() == 0 and run.writer.jsonl_path.exists():
        plot_loss_curve(run.writer.jsonl_path, workdir / "loss_curve.png")
    return last_logged


def _set_up(config, workdir, data: inputs.PretrainingData, checkpointer: Checkpointer) -> _Run:
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

    return _Run(
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


def _hint_allocator() -> None:
    if jax.default_backend() == "cpu" and (tunables := host_allocator.missing_tunables()):
        logging.info(
            "XLA:CPU steps run faster with GLIBC_TUNABLES=%s set before Python starts "
            "(moleblend_jax/host_allocator.py; experiments/pretrain.py sets it itself).",
            tunables,
        )


def _fetch_mean(pending) -> dict[str, float]:
    """Fetches the pending steps' metrics, raises on a non-finite step, and returns their
    mean (the learning rate at the last step)."""
    if not pending:
        return {}
    fetched = jax.device_get([m for _, m in pending])
    raise_if_not_finite([step for step, _ in pending], fetched)
    scalars = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1] if k != "is_finite"}
    scalars["learning_rate"] = float(fetched[-1]["learning_rate"])
    return scalars


def _log(step: int, scalars: dict, writer: MetricWriter, progress) -> dict:
    if not scalars:
        return {}
    writer.write(step, scalars)
    postfix = {"loss": f"{scalars['loss']:.4f}"}
    if "molecules_per_second" in scalars:
        postfix["mol/s"] = f"{scalars['molecules_per_second']:,.0f}"
    if "mfu" in scalars:
        postfix["mfu"] = f"{scalars['mfu']:.1%}"
    progress.set_postfix(postfix, refresh=False)
    return {"step": step, **scalars}


def _install_stop_flag():
    """SIGTERM (preemption) and SIGINT (Ctrl-C) set a flag the loop checks after each step: it
    saves and stops. A second Ctrl-C stops at once (KeyboardInterrupt).

    Returns (flag getter, function restoring the previous handlers).
    """
    received = []

    def handler(signum, frame):
        if signum == signal.SIGINT and received:
            raise KeyboardInterrupt
        logging.warning("%s: saving and stopping after this step.", signal.Signals(signum).name)
        received.append(time.time())

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:  # Not the main thread: rely on orbax's preemption check.
        return (lambda: bool(received)), (lambda: None)

    def restore():
        for signum, old in previous.items():
            signal.signal(signum, old)

    return (lambda: bool(received)), restore
