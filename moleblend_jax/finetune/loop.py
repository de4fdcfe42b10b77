"""The fine-tuning loop of one seed (SPEC 7): sharded state, the shared `train_step`, early
stopping on the validation metric.

Same pieces as pretraining (`train/loop.py`): optimizer and schedule (`train.optim`), sharded
state (`train.state`), the jitted step (`train.step`), the one non-finite rule
(`train.finite`); only the loss, the model head and the epoch structure differ.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from moleblend_jax.data import bucket_batches
from moleblend_jax.finetune import catalog, extra_features, metrics, predictor
from moleblend_jax.finetune.losses import Standardizer, finetune_loss_fn
from moleblend_jax.finetune.model import FinetuneModel, load_pretrained_encoder
from moleblend_jax.model import flops
from moleblend_jax.train import hardware, optim, sharding, telemetry
from moleblend_jax.train import state as state_lib
from moleblend_jax.train.compiled import CompiledPerShape
from moleblend_jax.train.finite import raise_if_not_finite
from moleblend_jax.train.memory import check_fits
from moleblend_jax.train.metrics_writer import MetricWriter
from moleblend_jax.train.programs import dummy_batch
from moleblend_jax.train.step import jit_apply, jit_train_step


@dataclasses.dataclass(frozen=True)
class FinetuneTask:
    """What is learnt and how it is scored: the data set's spec and its task names."""

    spec: catalog.DatasetSpec
    task_names: tuple[str, ...]

    @property
    def classification(self) -> bool:
        return self.spec.task_type == "classification"

    def make_model(
        self, model_config: ml_collections.ConfigDict, num_extra_features: int = 0
    ) -> FinetuneModel:
        """The encoder with the data set's modality only (3D for QM9, 2D otherwise)."""
        return FinetuneModel(
            config=model_config,
            num_tasks=len(self.task_names),
            use_2d=not self.spec.needs_3d,
            use_3d=self.spec.needs_3d,
            num_extra_features=num_extra_features,
        )

    def per_task_report(self, values, metric: str | None = None) -> dict[str, float]:
        """Per-task metric by task name; QM9 errors (`metric` rmse / mae, None: the primary)
        in SPEC 7's report units (meV for gaps)."""
        qm9 = self.spec.name == "qm9" and metric in (None, "rmse", "mae")
        return {
            str(task): float(catalog.qm9_to_report_units(task, value) if qm9 else value)
            for task, value in zip(self.task_names, values, strict=True)
        }


class SeedTrainer:
    """Trains and evaluates one seed at a time; what every seed shares is set up once."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        task: FinetuneTask,
        *,
        pretrained: dict | None = None,
        features: extra_features.RawFeatures | None = None,
    ):
        """features: every record's raw extra features (config.extra_features), or None."""
        self.config = config
        self.task = task
        self.pretrained = pretrained
        self.features = features
        self.feature_kinds = extra_features.parse(config.get("extra_features", ""))
        self.buckets = tuple(config.data.buckets)
        self.mesh = sharding.make_mesh(config.mesh)
        self.peak_flops = hardware.peak_flops_of_devices(jax.devices(), config.model.dtype)
        self.model = task.make_model(config.model, extra_features.feature_size(self.feature_kinds))
        # train=False: FinetuneModel's default.
        self._predict = jit_apply(self.model, self.mesh)
        self._table: extra_features.FeatureTable | None = None  # The current seed's.

    def batches(self, records: list[dict], rng: np.random.Generator | None = None) -> list[dict]:
        """Padded batches of `records`, with the seed's extra features when there are some."""
        batches = bucket_batches(records, self.config.batch_size, self.buckets, rng)
        return batches if self._table is None else [self._table.add_to(b) for b in batches]

    def __call__(
        self,
        records_by_split: dict[str, list[dict]],
        *,
        seed: int,
        writer: MetricWriter,
        save_dir=None,
        run_id: str = "",
        score_test: bool = True,
        on_epoch: Callable[[int, int, float], None] | None = None,
    ) -> dict:
        """records_by_split: train/valid/test records. Returns the seed's results.json entry
        (test at the best validation epoch, with `test_metrics`: the primary and secondary
        metrics, mean and per task; the label standardisation `label_mean` / `label_std` [T];
        with extra features, their `feature_scaling` fitted on the train split); with
        `save_dir`, the best-validation params are saved there (`predictor.save_params`,
        with `run_id`). `score_test` False: test is neither evaluated nor logged, and the
        entry has no test keys (a hyperparameter search's trials). `on_epoch(seed, epoch,
        valid metric)` runs after each epoch's evaluation; an exception it raises (a pruned
        trial) ends the seed there.
        Raises NonFiniteError when a step's loss or gradient norm is not finite."""
        config, task = self.config, self.task
        scaling = self._fit_features(records_by_split["train"])
        standardizer = Standardizer.from_train_labels(
            np.stack([r["labels"] for r in records_by_split["train"]]),
            None if task.classification else config.regression_loss,
        )
        # Set-up may move small things to the devices implicitly (keys, constants); the epochs
        # may not: their batches reach the devices only through `global_batch`.
        with jax.transfer_guard("allow"):
            state, step_fn, dropped = self._set_up(records_by_split["train"], seed, standardizer)
        scored = ("valid", "test") if score_test else ("valid",)
        eval_batches = {name: self.batches(records_by_split[name]) for name in scored}

        rng = np.random.default_rng(seed)
        best = {"valid": None, **({"test": None} if score_test else {}), "best_epoch": -1}
        step = epochs_run = 0
        with jax.transfer_guard("disallow"):
            for epoch in range(1, config.epochs + 1):
                batches = self.batches(records_by_split["train"], rng)
                state, train_loss, step, throughput = self._train_epoch(
                    state, step_fn, batches, standardizer, step, f"seed {seed} epoch {epoch} "
                )
                epochs_run = epoch
                split_scores = {
                    name: self._evaluate(
                        state.params,
                        eval_batches[name],
                        standardizer,
                        self.test_metrics if name == "test" else None,
                    )
                    for name in scored
                }
                scores, per_task = {}, {}
                for name, by_metric in split_scores.items():
                    scores[name], per_task[name] = by_metric[task.spec.metric]
                writer.write(
                    epoch,
                    {
                        "seed": seed,
                        "train_loss": train_loss,
                        **scores,
                        **throughput,
                    },
                )
                if on_epoch is not None:
                    on_epoch(seed, epoch, scores["valid"])
                if best["valid"] is None or metrics.is_better(
                    task.spec.metric, scores["valid"], best["valid"]
                ):
                    test = (
                        {
                            "test": scores["test"],
                            "test_per_task": task.per_task_report(per_task["test"]),
                            "test_metrics": self._report(split_scores["test"]),
                        }
                        if score_test
                        else {}
                    )
                    best = {"valid": scores["valid"], **test, "best_epoch": epoch}
                    best_params = jax.device_get(state.params) if save_dir else None
                elif epoch - best["best_epoch"] >= config.patience:
                    break
        if save_dir and best["best_epoch"] > 0:
            predictor.save_params(save_dir, best["best_epoch"], best_params, run_id)
        entry = {
            "seed": seed,
            **best,
            "epochs_run": epochs_run,
            "dropped_modules": dropped,
            "label_mean": standardizer.mean.tolist(),
            "label_std": standardizer.std.tolist(),
        }
        if scaling is not None:
            entry["feature_scaling"] = scaling.to_json()
        return entry

    def _fit_features(self, train_records: list[dict]) -> extra_features.FeatureScaling | None:
        """Fits the extra features' scaling on this seed's train records and makes `batches`
        add them; None without extra features."""
        self._table = None
        if not self.feature_kinds:
            return None
        if self.features is None:
            raise ValueError("config.extra_features is set: SeedTrainer needs features=")
        train = self.features.subset([int(r["id"]) for r in train_records])
        scaling = extra_features.FeatureScaling.fit(self.feature_kinds, train)
        self._table = extra_features.FeatureTable(self.features, scaling)
        return scaling

    @property
    def test_metrics(self) -> tuple[str, ...]:
        """What the test split is scored with: the primary metric, then the secondary ones."""
        primary = self.task.spec.metric
        return (primary, *metrics.secondary_metrics(primary))

    def _report(self, scores: dict[str, tuple[float, list[float]]]) -> dict[str, dict]:
        """`_evaluate`'s scores -> {name: {"mean": over tasks, "per_task": {task: value}}}."""
        return {
            name: {"mean": mean, "per_task": self.task.per_task_report(per_task, name)}
            for name, (mean, per_task) in scores.items()
        }

    def _train_epoch(self, state, step_fn, batches, standardizer, step: int, where: str):
        """One pass over `batches` -> (state, mean training loss, last step number, the
        epoch's throughput: train/telemetry.py's fields)."""
        steps, step_metrics, clock = [], [], telemetry.StepClock()
        for batch in batches:
            molecules = int(batch["mol_mask"].sum())
            with clock.waiting_for_input():
                batch = sharding.global_batch(standardizer.encode(batch), self.mesh)
            state, out = step_fn(state, batch)
            clock.dispatched(out, **self._step_cost(step_fn, batch, molecules))
            step += 1
            steps.append(step)
            step_metrics.append(out)
        fetched = jax.device_get(step_metrics)
        clock.finish()
        raise_if_not_finite(steps, fetched, where=where)
        throughput = clock.interval(self.peak_flops)
        return state, float(np.mean([m["loss"] for m in fetched])), step, throughput

    def _step_cost(self, step_fn, batch, molecules: int) -> dict:
        """StepClock.step_done's arguments for a fine-tuning step on `batch`."""
        batch_size, num_atoms = batch["atom_mask"].shape
        model_flops = flops.finetune_step_flops(
            self.config.model, batch_size, num_atoms, self.task.spec.needs_3d
        )
        return telemetry.step_cost(step_fn, batch, molecules=molecules, model_flops=model_flops)

    def _set_up(self, train_records: list[dict], seed: int, standardizer: Standardizer):
        """-> (state, compiled step, dropped pretrained modules) for one seed."""
        config, mesh = self.config, self.mesh
        steps_per_epoch = len(self.batches(train_records))
        total_steps = max(1, steps_per_epoch * config.epochs)
        schedule = optim.make_schedule(
            config.optimizer, total_steps, steps_per_epoch * config.warmup_epochs
        )
        tx = optim.make_optimizer(config.optimizer, schedule)
        example = dummy_batch(jax.device_count(), self.buckets[0])
        if self._table is not None:  # The head's input grows by the molecule features.
            example[extra_features.BATCH_KEY] = np.zeros(
                (len(example["atom_mask"]), self._table.scaling.size), np.float32
            )
        layout = state_lib.state_layout(
            self.model,
            tx,
            example,
            jax.random.PRNGKey(seed),
            mesh,
            config.mesh.rules,
            state_lib.optimizer_state_axis(config.mesh),
        )
        state, shardings = layout.init(), layout.shardings
        dropped = []
        if self.pretrained is not None:
            params, dropped = load_pretrained_encoder(jax.device_get(state.params), self.pretrained)
            state = state.replace(params=jax.device_put(params, shardings.params))
            logging.info("Loaded pretrained encoder; dropped %s", dropped)
        loss_fn = finetune_loss_fn(self.model, self.task.classification, standardizer)
        step_fn = CompiledPerShape(
            jit_train_step(loss_fn, tx, schedule, shardings, mesh),
            "fine-tuning step",
            check_memory=lambda memory, shape: check_fits(  # The pre-flight of pretraining.
                memory,
                what=f"fine-tuning step for batch {shape}",
                batch_size=config.batch_size,
                grad_accum_steps=1,
                remat=config.model.remat,
            ),
        )
        return state, step_fn, dropped

    def _evaluate(
        self, params, batches, standardizer, names: tuple[str, ...] | None = None
    ) -> dict[str, tuple[float, list[float]]]:
        """Metric name (default: the primary only) -> (averaged over tasks, per task) on
        `batches`."""
        preds, labels, masks = [], [], []
        for batch in batches:
            out = np.asarray(self._predict(params, sharding.global_batch(batch, self.mesh)))
            keep = batch["mol_mask"]
            preds.append(out[keep] if self.task.classification else standardizer.decode(out[keep]))
            labels.append(batch["labels"][keep])
            masks.append(batch["label_mask"][keep])
        labels, preds, masks = (np.concatenate(x) for x in (labels, preds, masks))
        scores = {}
        for name in names or (self.task.spec.metric,):
            mean, per_task = metrics.compute_metric(name, labels, preds, masks)
            scores[name] = (float(mean), [float(v) for v in per_task])
        return scores
