"""Fine-tuning and evaluation on one data set over several seeds (SPEC 7): the orchestration.

`run` locks the workdir, starts a run in it (`finetune.workdir`: a rerun on other data is
refused), checks the config, gets the data (`finetune.task_data`), one split per seed (read from
`config.split_file`, or made and saved in the run), trains each seed (`finetune.loop`) with
its own TensorBoard run, writes results.json and predictor.json, and commits the run.
"""

import logging
import os
from collections.abc import Callable

import jax
import ml_collections

from moleblend_jax import atomic, pretrained
from moleblend_jax.errors import UserError
from moleblend_jax.finetune import (
    extra_features,
    predictor,
    splits,
    task_data,
    unimol_data,
    user_data,
)
from moleblend_jax.finetune import workdir as workdir_lib
from moleblend_jax.finetune.loop import FinetuneTask, SeedTrainer
from moleblend_jax.finetune.losses import REGRESSION_LOSSES
from moleblend_jax.finetune.results import summarize
from moleblend_jax.train import optim, sharding
from moleblend_jax.train.lock import locked
from moleblend_jax.train.metrics_writer import MetricWriter
from moleblend_jax.train.paths import as_path


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fails fast, before any data or compilation, on settings that cannot work (the device
    count is checked by `check_devices`, after the data: a user file's mistakes are reported
    before JAX starts and logs)."""
    buckets = tuple(config.data.buckets)
    if list(buckets) != sorted(buckets) or buckets[-1] < config.data.max_atoms:
        # Every record must fit a bucket: molecules above max_atoms are skipped (and counted)
        # when the shards are built, none later.
        raise UserError(
            f"config.data.buckets={buckets} must be increasing and end at or above "
            f"config.data.max_atoms={config.data.max_atoms}."
        )
    if config.split not in ("", *splits.SPLIT_KINDS, "column", unimol_data.SPLIT):
        raise UserError(
            f"config.split={config.split!r}; use '', 'scaffold', 'random', 'column' or 'files'."
        )
    if config.split == unimol_data.SPLIT and config.dataset != unimol_data.DATASET:
        raise UserError(
            f"config.split=files is the split of a data set given as files "
            f"(--config.dataset={unimol_data.DATASET}); {config.dataset} has none"
        )
    if config.split_column and config.split not in ("", "column"):
        raise UserError(
            f"config.split_column={config.split_column!r} is read with config.split=column; "
            f"drop one of them (config.split={config.split!r})."
        )
    if config.modality and config.dataset not in (*user_data.FORMATS, unimol_data.DATASET):
        raise UserError(
            f"config.modality={config.modality!r} is for your own files (dataset csv, sdf or "
            f"{unimol_data.DATASET}); {config.dataset} has its own"
        )
    optim.check_config(config.optimizer)
    if config.regression_loss not in REGRESSION_LOSSES:
        raise UserError(
            f"config.regression_loss={config.regression_loss!r}; use one of {REGRESSION_LOSSES}."
        )
    extra_features.parse(config.extra_features)
    if config.init_checkpoint:
        try:
            pretrained.check(config.init_checkpoint)
        except UserError as err:
            raise type(err)(f"config.init_checkpoint={err}") from None


def load_init(config: ml_collections.ConfigDict) -> pretrained.InitWeights | None:
    """The weights config.init_checkpoint names (`pretrained.load`: pretrained:NAME, an orbax
    directory, the original's .pt), checked against config.model; None: random init. Logs
    which init the run uses."""
    logging.info("Fine-tuning from %s", pretrained.describe(config.init_checkpoint))
    if not config.init_checkpoint:
        return None
    init = pretrained.load(config.init_checkpoint)
    pretrained.require_matching_config(init, config.model)
    logging.info("Loaded %s", init.description)
    return init


def check_devices(config: ml_collections.ConfigDict) -> None:
    """The global batch must split evenly over the devices."""
    sharding.per_device_batch(config.batch_size)


def run(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    score_test: bool = True,
    on_epoch: Callable[[int, int, float], None] | None = None,
    data_root: str | os.PathLike | None = None,
) -> dict:
    """Fine-tunes `config.dataset` for config.num_seeds seeds in a new run of `workdir`,
    committed when every seed and results.json are written; returns the results.

    For a hyperparameter search's trials (`finetune.sweep`): `score_test` False never
    evaluates test (results without test keys), `on_epoch(seed, epoch, valid metric)` runs
    after every epoch (`loop.SeedTrainer`), and `data_root` holds the shards instead of
    WORKDIR/data (built once for all trials)."""
    workdir = as_path(workdir)
    config = config.copy_and_resolve_references()
    validate_config(config)
    is_writer = jax.process_index() == 0
    with locked(workdir, enabled=is_writer):
        run_dir = workdir_lib.start_run(workdir, config) if is_writer else None
        results = _run(
            config,
            workdir,
            run_dir,
            score_test=score_test,
            on_epoch=on_epoch,
            data_root=data_root,
        )
        if is_writer:
            workdir_lib.commit(run_dir)
    return results


def _run(
    config: ml_collections.ConfigDict, workdir, run_dir, *, score_test, on_epoch, data_root
) -> dict:
    """The run itself: everything it writes goes to `run_dir` (None: a process that writes
    nothing), the shards to `data_root` (None: WORKDIR/data)."""
    data = task_data.load(config, workdir, data_root=data_root)
    check_devices(config)
    if data.skipped:
        logging.warning("%s: skipped %s", data.spec.name, data.skipped)
    split_kind = config.split or data.spec.default_split
    is_writer = run_dir is not None
    seed_records = {}  # Every seed's split, checked before any compilation.
    for seed in range(config.seed, config.seed + config.num_seeds):
        split = task_data.seed_split(
            data, split_kind, seed, workdir=run_dir, split_file=config.split_file, save=is_writer
        )
        seed_records[seed] = task_data.split_records(data, split)
        task_data.check_split_records(data, seed_records[seed], split_kind, seed)

    init = load_init(config)
    kinds = extra_features.parse(config.extra_features)
    features = extra_features.raw_features(data.records, kinds) if kinds else None
    task = FinetuneTask(data.spec, data.task_names)
    train_seed = SeedTrainer(
        config, task, pretrained=init.params if init else None, features=features
    )
    run_id = workdir_lib.run_id_of(run_dir) if is_writer else ""
    seeds = []
    for seed, records_by_split in seed_records.items():
        writer = MetricWriter(run_dir or workdir, enabled=is_writer, run=f"seed_{seed}")
        try:
            save_dir = predictor.seed_checkpoint_dir(run_dir, seed) if is_writer else None
            seeds.append(
                train_seed(
                    records_by_split,
                    seed=seed,
                    writer=writer,
                    save_dir=save_dir,
                    run_id=run_id,
                    score_test=score_test,
                    on_epoch=on_epoch,
                )
            )
        finally:
            writer.close()
    # Each seed's descriptor scaling goes to predictor.json, not results.json (217 x 2 numbers).
    scalings = {s["seed"]: s.pop("feature_scaling") for s in seeds if "feature_scaling" in s}
    results = summarize(
        data.spec,
        split_kind,
        init="pretrained" if config.init_checkpoint else "scratch",
        init_checkpoint=config.init_checkpoint,
        seeds=seeds,
        config=config.to_dict(),
        run_id=run_id,
        tasks=list(data.task_names),
        num_molecules=len(data.records),
        skipped=data.skipped,
        pretrain=init.pretrain if init else None,
    )
    if is_writer:
        atomic.write_json(run_dir / workdir_lib.RESULTS_FILE, results, indent=2)
        conformers = task_data.conformer_mode(data.spec) or "file"
        predictor.write_manifest(run_dir, config, task, conformers, seeds, scalings)
    return results
