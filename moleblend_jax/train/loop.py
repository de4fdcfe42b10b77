"""The pretraining loop: data, sharded state, jitted step, logging, checkpoints, resume."""

import logging
import pathlib
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from moleblend_jax import host_allocator
from moleblend_jax import model as model_lib
from moleblend_jax.train import optim, sharding
from moleblend_jax.train import state as state_lib
from moleblend_jax.train.checkpoint import Checkpointer
from moleblend_jax.train.finite import NonFiniteError, raise_if_not_finite
from moleblend_jax.train.metrics_writer import MetricWriter, plot_loss_curve
from moleblend_jax.train.step import jit_train_step, pretraining_loss_fn

LOSS_TERMS = ("spd", "edge", "direction", "denoise")


def dummy_batch(batch_size: int, num_atoms: int) -> dict[str, jnp.ndarray]:
    """All-padding batch with the shapes and dtypes of docs/batch_format.md (for init)."""
    return {
        "atom_features": jnp.zeros((batch_size, num_atoms, 9), jnp.int32),
        "atom_mask": jnp.zeros((batch_size, num_atoms), bool),
        "spd": jnp.zeros((batch_size, num_atoms, num_atoms), jnp.int32),
        "path_edges": jnp.zeros((batch_size, num_atoms, num_atoms, 5, 3), jnp.int32),
        "coords": jnp.zeros((batch_size, num_atoms, 3), jnp.float32),
        "mol_mask": jnp.zeros((batch_size,), bool),
    }


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fails fast, before any compilation, on settings that cannot work."""
    if config.batch_size % jax.device_count():
        raise ValueError(
            f"config.batch_size={config.batch_size} is not divisible by the "
            f"{jax.device_count()} devices."
        )
    missing = set(LOSS_TERMS) - set(config.loss_weights)
    if missing:
        raise ValueError(f"config.loss_weights lacks {sorted(missing)}.")
    buckets = tuple(config.data.buckets)
    if list(buckets) != sorted(buckets) or buckets[-1] > config.data.max_atoms:
        raise ValueError(f"config.data.buckets={buckets} must be increasing and <= max_atoms.")


def resolve_data_dir(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> pathlib.Path:
    """The configured shard directory, or default shards built once under WORKDIR/data."""
    from moleblend_jax.data import reader, shards

    if config.data.dir:
        data_dir = pathlib.Path(config.data.dir)
    else:
        data_dir = workdir / "data" / config.data.default_source
        if not (data_dir / "metadata.json").exists() and jax.process_index() == 0:
            logging.info(
                "No data configured: building %s shards in %s", config.data.default_source, data_dir
            )
            shards.build_shards(
                config.data.default_source,
                data_dir,
                workers=config.data.num_prep_workers,
                max_atoms=config.data.max_atoms,
                limit=config.data.max_molecules or None,
            )
    reader.shard_paths(str(data_dir))  # Raises, naming the path, if missing or corrupt.
    return data_dir


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
    """Pretrains until `config.total_steps`, resuming from the latest checkpoint in workdir.

    Returns the metrics of the last logged step.
    """
    from moleblend_jax.data import pipeline

    workdir = pathlib.Path(workdir)
    validate_config(config)
    if jax.default_backend() == "cpu" and (tunables := host_allocator.missing_tunables()):
        logging.info(
            "XLA:CPU steps run faster with GLIBC_TUNABLES=%s set before Python starts "
            "(moleblend_jax/host_allocator.py; experiments/pretrain.py sets it itself).",
            tunables,
        )
    data_dir = resolve_data_dir(config, workdir)

    num_processes = jax.process_count()
    buckets = tuple(config.data.buckets)
    if num_processes > 1 and len(buckets) > 1:
        # Every process must feed the same padded shape at the same step.
        logging.info("Multi-process run: padding every batch to %d atoms.", buckets[-1])
        buckets = buckets[-1:]
    local_batch_size = config.batch_size // num_processes

    mesh = sharding.make_mesh(config.mesh)
    model = model_lib.MoleBlend(config=config.model)
    schedule, tx = optim.pretraining_optimizer(config)
    example = dummy_batch(jax.device_count(), buckets[0])
    state, state_shardings = state_lib.create_sharded_state(
        model, tx, example, jax.random.PRNGKey(config.seed), mesh, config.mesh.rules
    )

    checkpointer = Checkpointer(
        workdir / "checkpoints", config.checkpoint_every, config.keep_checkpoints
    )
    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
    start_step = 0
    if checkpointer.latest_step() is not None:
        target = state_lib.abstract_state(state_shardings, model, tx, example)
        state, meta = checkpointer.restore(target)
        start_step = int(meta["data_position"])
        logging.info("Resumed from step %d in %s", start_step, checkpointer.directory)
    writer.truncate_after(start_step)

    batches = pipeline.make_batches(
        data_dir,
        local_batch_size,
        buckets,
        seed=config.seed,
        shuffle=True,
        repeat=True,
        shard_index=jax.process_index(),
        num_shards_total=num_processes,
        start_batch=start_step,
        shuffle_buffer=config.data.shuffle_buffer,
    )
    jitted_step = jit_train_step(
        pretraining_loss_fn(model, dict(config.loss_weights)), tx, schedule, state_shardings, mesh
    )

    preempted, restore_sigterm = _install_sigterm_flag()
    progress = tqdm.tqdm(
        total=config.total_steps * config.batch_size,
        initial=start_step * config.batch_size,
        unit="mol",
        unit_scale=True,
        disable=jax.process_index() != 0,
        dynamic_ncols=True,
    )
    pending = []  # Device metrics since the last log, fetched together to avoid syncs.
    last_logged = {}
    step = start_step
    stop_step = config.total_steps
    if config.max_steps_per_run:
        stop_step = min(stop_step, start_step + config.max_steps_per_run)
    try:
        while step < stop_step:
            batch = sharding.global_batch(next(batches), mesh)
            state, metrics = jitted_step(state, batch)
            step += 1
            pending.append((step, metrics))
            progress.update(config.batch_size)
            is_log_step = step % config.log_every == 0 or step == stop_step
            if is_log_step or step % config.checkpoint_every == 0 or preempted():
                last_logged = _log(pending, writer, progress) or last_logged
                pending = []
            if preempted() or checkpointer.reached_preemption(step):
                checkpointer.save(step, state, data_position=step, force=True)
                logging.warning("Preempted: saved step %d and stopped.", step)
                break
            checkpointer.save(step, state, data_position=step)
        else:
            _log(pending, writer, progress)
            checkpointer.save(step, state, data_position=step, force=True)
    except NonFiniteError:
        logging.error("Stopped; the last good checkpoint is step %s.", checkpointer.latest_step())
        raise
    finally:
        restore_sigterm()
        progress.close()
        checkpointer.close()
        writer.close()
    if jax.process_index() == 0 and writer.jsonl_path.exists():
        plot_loss_curve(writer.jsonl_path, workdir / "loss_curve.png")
    return last_logged


def _log(pending, writer: MetricWriter, progress) -> dict:
    """Fetches the pending steps' metrics, raises on a non-finite step, and logs their mean
    (the learning rate at the last step) under the last step's number."""
    if not pending:
        return {}
    fetched = jax.device_get([m for _, m in pending])
    raise_if_not_finite([step for step, _ in pending], fetched)
    step = pending[-1][0]
    scalars = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1] if k != "is_finite"}
    scalars["learning_rate"] = float(fetched[-1]["learning_rate"])
    writer.write(step, scalars)
    progress.set_postfix(loss=f"{scalars['loss']:.4f}", refresh=False)
    return {"step": step, **scalars}


def _install_sigterm_flag():
    """SIGTERM (preemption) sets a flag the loop checks after each step.

    Returns (flag getter, function restoring the previous handler).
    """
    received = []
    try:
        previous = signal.signal(signal.SIGTERM, lambda *_: received.append(time.time()))
    except ValueError:  # Not the main thread: rely on orbax's preemption check.
        return (lambda: bool(received)), (lambda: None)
    return (lambda: bool(received)), (lambda: signal.signal(signal.SIGTERM, previous))
