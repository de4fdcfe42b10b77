"""Fine-tuning and evaluation on one data set over several seeds (SPEC 7).

Reuses the pretraining machinery: the same optimizer, sharded `train_step`, mesh and metric
writer; only the loss and the model head differ.
"""

import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from moleblend_jax.chem import SkipMolecule, smiles_to_record
from moleblend_jax.data import pad_batch
from moleblend_jax.finetune import datasets, metrics, splits
from moleblend_jax.finetune.model import FinetuneModel, load_pretrained_encoder
from moleblend_jax.finetune.results import summarize
from moleblend_jax.train import checkpoint, optim, sharding
from moleblend_jax.train import state as state_lib
from moleblend_jax.train.metrics_writer import MetricWriter
from moleblend_jax.train.step import jit_train_step


def masked_bce_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """[B, T] logits, {0,1} labels, bool mask -> mean BCE over labelled entries."""
    losses = optax.sigmoid_binary_cross_entropy(logits, labels)
    return jnp.sum(jnp.where(mask, losses, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def masked_mse_loss(preds: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """[B, T] predictions and standardised targets -> mean squared error over labelled entries."""
    return jnp.sum(jnp.where(mask, (preds - targets) ** 2, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def finetune_loss_fn(model: FinetuneModel, classification: bool):
    def loss_fn(params, batch, rngs):
        out = model.apply({"params": params}, batch, train=True, rngs=rngs)
        mask = batch["label_mask"]
        if classification:
            loss = masked_bce_loss(out, batch["labels"], mask)
        else:
            loss = masked_mse_loss(out, batch["labels"], mask)
        return loss, {"loss": loss}

    return loss_fn


def featurize(smiles, labels, *, needs_3d: bool, max_atoms: int) -> tuple[list[dict], dict]:
    """SMILES + labels [M, T] -> records (id = row index) and skip counts by reason."""
    records, skipped = [], {}
    for i, smi in enumerate(smiles):
        try:
            record = smiles_to_record(
                smi,
                i,
                coords="rdkit" if needs_3d else "none",
                labels=labels[i],
                max_atoms=max_atoms,
            )
        except SkipMolecule as skip:
            skipped[skip.reason] = skipped.get(skip.reason, 0) + 1
            continue
        records.append(record)
    return records, skipped


def qm9_records(workdir: pathlib.Path, limit: int | None) -> tuple[list[dict], list[str], dict]:
    """QM9 with DFT coordinates from shards built once under workdir; labels in label units."""
    from moleblend_jax.data import iter_records, load_metadata
    from moleblend_jax.data.shards import build_shards

    data_dir = workdir / "data" / "qm9"
    if not (data_dir / "metadata.json").exists():
        build_shards("qm9", str(data_dir), limit=limit or None)
    metadata = load_metadata(str(data_dir))
    return list(iter_records(str(data_dir))), list(metadata["label_names"]), metadata["skipped"]


def make_batches(records, batch_size, buckets, rng=None):
    """Records -> padded numpy batches grouped by bucket (shuffled when rng is given)."""
    order = np.arange(len(records)) if rng is None else rng.permutation(len(records))
    by_bucket = {b: [] for b in buckets}
    for i in order:
        n = len(records[i]["atom_features"])
        by_bucket[next(b for b in buckets if n <= b)].append(records[i])
    batches = [
        pad_batch(group[start : start + batch_size], bucket, batch_size)
        for bucket, group in by_bucket.items()
        for start in range(0, len(group), batch_size)
    ]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


class Standardizer:
    """Per-task train mean/std for regression targets (identity for classification)."""

    def __init__(self, train_labels: np.ndarray, enabled: bool):
        self.mean = np.nanmean(train_labels, axis=0) if enabled else 0.0
        std = np.nanstd(train_labels, axis=0) if enabled else 1.0
        self.std = np.where(np.asarray(std) > 0, std, 1.0)

    def encode(self, batch):
        return {
            **batch,
            "labels": np.where(
                batch["label_mask"], (batch["labels"] - self.mean) / self.std, 0.0
            ).astype(np.float32),
        }

    def decode(self, preds):
        return preds * self.std + self.mean


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
    """Fine-tunes `config.dataset` for config.num_seeds seeds; writes results.json."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    spec = datasets.get_spec(config.dataset)
    classification = spec.task_type == "classification"
    config = config.copy_and_resolve_references()
    if config.init_checkpoint and not pathlib.Path(config.init_checkpoint).exists():
        raise FileNotFoundError(f"config.init_checkpoint={config.init_checkpoint} does not exist.")
    if config.batch_size % jax.device_count():
        raise ValueError(
            f"batch_size {config.batch_size} not divisible by {jax.device_count()} devices"
        )

    if spec.name == "qm9":
        records, task_names, skipped = qm9_records(workdir, config.max_molecules)
    else:
        smiles, labels, task_names = datasets.load_dataset(spec.name, config.dataset_path)
        if 0 < config.max_molecules < len(smiles):
            # A fixed random subset (seed 0), not a prefix: some files are sorted by label.
            keep = np.sort(
                np.random.default_rng(0).permutation(len(smiles))[: config.max_molecules]
            )
            smiles, labels = [smiles[i] for i in keep], labels[keep]
        records, skipped = featurize(
            smiles, labels, needs_3d=spec.needs_3d, max_atoms=config.data.buckets[-1]
        )
    if skipped:
        logging.warning("%s: skipped %s", spec.name, skipped)
    split_kind = config.split or spec.default_split
    # Split indices refer to the featurised records (source order, skipped ones left out).
    record_smiles = [str(r["smiles"]) for r in records]

    writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
    mesh = sharding.make_mesh(config.mesh)
    model = FinetuneModel(
        config=config.model,
        num_tasks=len(task_names),
        use_2d=not spec.needs_3d,
        use_3d=spec.needs_3d,
    )
    pretrained = (
        checkpoint.restore_params(config.init_checkpoint) if config.init_checkpoint else None
    )

    seeds = []
    for seed in range(config.seed, config.seed + config.num_seeds):
        split = _split(config, split_kind, record_smiles, seed, workdir)
        seeds.append(
            _run_seed(
                config,
                model,
                records,
                split,
                seed,
                classification,
                spec,
                pretrained,
                mesh,
                writer,
                task_names,
            )
        )
    writer.close()
    results = summarize(
        spec,
        split_kind,
        init="pretrained" if config.init_checkpoint else "scratch",
        init_checkpoint=config.init_checkpoint,
        seeds=seeds,
        config=config.to_dict(),
        tasks=list(task_names),
        num_molecules=len(records),
        skipped=skipped,
    )
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def _split(config, kind, smiles, seed, workdir):
    if config.split_file and pathlib.Path(config.split_file).exists():
        split = splits.load_split(config.split_file)
    else:
        kwargs = (
            datasets.QM9_SPLIT_SIZES if config.dataset == "qm9" and len(smiles) > 30_000 else {}
        )
        split = splits.make_split(kind, smiles, seed=seed, **kwargs)
        path = config.split_file or workdir / f"split_{kind}_seed{seed}.json"
        splits.save_split(path, split)
    splits.check_split(split, len(smiles))
    return split


def _run_seed(
    config, model, records, split, seed, classification, spec, pretrained, mesh, writer, task_names
):
    parts = {name: [records[i] for i in split[name]] for name in ("train", "valid", "test")}
    train_labels = np.stack([r["labels"] for r in parts["train"]])
    standardizer = Standardizer(train_labels, enabled=not classification)
    buckets = tuple(config.data.buckets)
    steps_per_epoch = len(make_batches(parts["train"], config.batch_size, buckets))
    total_steps = max(1, steps_per_epoch * config.epochs)
    schedule = optim.make_schedule(
        config.optimizer, total_steps, steps_per_epoch * config.warmup_epochs
    )
    tx = optim.make_optimizer(config.optimizer, schedule)

    example = pad_batch(parts["train"][:1], buckets[0], jax.device_count())
    example = sharding.global_batch(example, mesh)
    state, shardings = state_lib.create_sharded_state(
        model, tx, example, jax.random.PRNGKey(seed), mesh, config.mesh.rules
    )
    dropped = []
    if pretrained is not None:
        params, dropped = load_pretrained_encoder(jax.device_get(state.params), pretrained)
        state = state.replace(params=jax.device_put(params, shardings.params))
        logging.info("Loaded pretrained encoder; dropped %s", dropped)

    step_fn = jit_train_step(finetune_loss_fn(model, classification), tx, schedule, shardings, mesh)
    predict = jax.jit(lambda params, batch: model.apply({"params": params}, batch, train=False))
    eval_batches = {
        name: make_batches(parts[name], config.batch_size, buckets) for name in ("valid", "test")
    }
    rng = np.random.default_rng(seed)
    best = {"valid": None, "test": None, "best_epoch": -1}
    epochs_run = 0
    for epoch in range(1, config.epochs + 1):
        losses = []
        for batch in make_batches(parts["train"], config.batch_size, buckets, rng):
            state, step_metrics = step_fn(
                state, sharding.global_batch(standardizer.encode(batch), mesh)
            )
            losses.append(step_metrics["loss"])
        epochs_run = epoch
        scores, per_task = {}, {}
        for name, batches in eval_batches.items():
            scores[name], per_task[name] = _evaluate(
                predict, state.params, batches, standardizer, classification, spec.metric, mesh
            )
        train_loss = float(np.mean(jax.device_get(losses)))
        if not np.isfinite(train_loss):
            raise FloatingPointError(f"seed {seed} epoch {epoch}: training loss is not finite")
        writer.write(
            epoch,
            {
                "seed": seed,
                "train_loss": train_loss,
                "valid": scores["valid"],
                "test": scores["test"],
            },
        )
        if best["valid"] is None or metrics.is_better(spec.metric, scores["valid"], best["valid"]):
            best = {
                "valid": scores["valid"],
                "test": scores["test"],
                "test_per_task": _per_task_report(spec, task_names, per_task["test"]),
                "best_epoch": epoch,
            }
        elif epoch - best["best_epoch"] >= config.patience:
            break
    return {"seed": seed, **best, "epochs_run": epochs_run, "dropped_modules": dropped}


def _per_task_report(spec, task_names, values) -> dict[str, float]:
    """Per-task test metric by task name, QM9 MAEs in SPEC 7's report units (meV for gaps)."""
    report = datasets.qm9_to_report_units if spec.name == "qm9" else (lambda task, v: v)
    return {str(t): float(report(t, v)) for t, v in zip(task_names, values, strict=True)}


def _evaluate(
    predict, params, batches, standardizer, classification, metric_name, mesh
) -> tuple[float, list[float]]:
    """-> (metric averaged over tasks, per-task metric) on `batches`."""
    preds, labels, masks = [], [], []
    for batch in batches:
        out = np.asarray(predict(params, sharding.global_batch(batch, mesh)))
        keep = batch["mol_mask"]
        preds.append(out[keep] if classification else standardizer.decode(out[keep]))
        labels.append(batch["labels"][keep])
        masks.append(batch["label_mask"][keep])
    mean, per_task = metrics.compute_metric(
        metric_name, np.concatenate(labels), np.concatenate(preds), np.concatenate(masks)
    )
    return float(mean), [float(v) for v in per_task]
