"""What prediction needs from a fine-tuning run: saved in its run directory, loaded back, applied.

A run's directory (`finetune.workdir`: WORKDIR/runs/<run_id>, committed as WORKDIR/current)
holds:
  predictor.json               format, run_id, dataset, task_names, task_type, use_2d / use_3d,
                               conformers (how the training molecules got coordinates),
                               max_atoms, buckets, batch_size, smiles_column, id_column,
                               model (config.model) and, per seed, its checkpoint directory,
                               best_epoch and the label standardisation label_mean / label_std
                               [T] (`losses.Standardizer`).
  checkpoints/seed_<k>         an orbax checkpoint at step best_epoch holding
                               {"params": the best-validation params}
                               (`train.checkpoint.restore_params` reads it) and RUN_ID.
Loading reads one run's directory, resolved once, and checks that every checkpoint carries
the manifest's run id and finite params: prediction never mixes two runs.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_collections
import numpy as np

from moleblend_jax import atomic
from moleblend_jax.errors import UserError
from moleblend_jax.finetune import workdir as workdir_lib
from moleblend_jax.finetune.losses import Standardizer
from moleblend_jax.train.paths import as_path

PREDICTOR_FILE = workdir_lib.PREDICTOR_FILE
FORMAT = 1


def seed_checkpoint_dir(run_dir: str | os.PathLike, seed: int):
    """RUN_DIR/checkpoints/seed_<seed>."""
    return as_path(run_dir) / "checkpoints" / f"seed_{seed}"


def save_params(directory: str | os.PathLike, step: int, params, run_id: str = "") -> None:
    """Host params -> an orbax checkpoint at `step` holding {"params": params} (replacing any
    checkpoint already there), and RUN_ID naming the run it belongs to."""
    from moleblend_jax.train.checkpoint import Checkpointer

    directory = as_path(directory)
    if directory.exists():
        directory.rmtree()
    checkpointer = Checkpointer(directory, save_every=1, keep=1)
    checkpointer.save(step, {"params": params}, force=True)
    checkpointer.close()
    if run_id:
        workdir_lib.write_seed_run_id(directory, run_id)


def write_manifest(
    run_dir: str | os.PathLike,
    config: ml_collections.ConfigDict,
    task,
    conformers: str,
    seeds: list[dict],
) -> dict:
    """RUN_DIR/predictor.json from the run's config, its `loop.FinetuneTask`, the conformer
    mode of its data and its seeds' results entries; returns the manifest."""
    manifest = {
        "format": FORMAT,
        "run_id": workdir_lib.run_id_of(run_dir),
        "dataset": task.spec.name,
        "task_names": list(task.task_names),
        "task_type": task.spec.task_type,
        "metric": task.spec.metric,
        "use_2d": not task.spec.needs_3d,
        "use_3d": bool(task.spec.needs_3d),
        "conformers": conformers,
        "max_atoms": int(config.data.max_atoms),
        "buckets": [int(b) for b in config.data.buckets],
        "batch_size": int(config.batch_size),
        "smiles_column": config.smiles_column,
        "id_column": config.id_column,
        "model": config.model.to_dict(),
        "seeds": [
            {
                "seed": s["seed"],
                "best_epoch": s["best_epoch"],
                "checkpoint": f"checkpoints/seed_{s['seed']}",
                "label_mean": s["label_mean"],
                "label_std": s["label_std"],
            }
            for s in seeds
        ],
    }
    atomic.write_json(as_path(run_dir) / PREDICTOR_FILE, manifest)
    return manifest


def is_finetune_workdir(path: str | os.PathLike) -> bool:
    return workdir_lib.committed_dir(path) is not None


def read_manifest(workdir: str | os.PathLike) -> tuple[dict, object]:
    """(predictor.json, the directory its paths are relative to) of WORKDIR's committed run;
    UserError when WORKDIR is not a fine-tuning workdir."""
    run_dir = workdir_lib.committed_dir(workdir)
    path = run_dir / PREDICTOR_FILE if run_dir is not None else None
    if path is None or not path.exists():
        raise UserError(
            f"{workdir} is not a fine-tuning workdir (no {PREDICTOR_FILE}); pass the --workdir "
            "of experiments/finetune.py"
        )
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err})") from None
    if manifest.get("format") != FORMAT:
        raise UserError(f"{path}: format {manifest.get('format')} is not {FORMAT}")
    return manifest, run_dir


def require_finite(params, where: str) -> None:
    """UserError naming the first parameters holding NaN or inf."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for key, leaf in leaves:
        value = np.asarray(leaf)
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            name = "/".join(str(getattr(k, "key", k)) for k in key)
            raise UserError(
                f"{where}: parameter {name} holds NaN or inf; the checkpoint is unusable"
            )


def load_seed_params(manifest: dict, run_dir, seed: dict) -> dict:
    """One seed's params, checked: its checkpoint exists, carries the manifest's run id and
    holds finite values. UserError otherwise."""
    from moleblend_jax.train.checkpoint import restore_params

    directory = as_path(run_dir) / seed["checkpoint"]
    want = manifest.get("run_id")  # None: a workdir written before run ids.
    have = workdir_lib.read_seed_run_id(directory)
    if want is not None and have != want:
        raise UserError(
            f"{directory} belongs to run {have}, {PREDICTOR_FILE} to run {want}: the workdir "
            "mixes two runs; fine-tune again"
        )
    try:
        params = restore_params(directory)
    except FileNotFoundError as err:
        raise UserError(f"{directory}: {err}") from None
    require_finite(params, str(directory))
    return params


@dataclasses.dataclass
class Predictor:
    """The fine-tuned seeds of one workdir: `predict(records)` -> [S, M, T] predictions in
    label units (classification: probabilities)."""

    manifest: dict
    model: object  # FinetuneModel
    params: list  # Per seed.

    @classmethod
    def load(cls, workdir: str | os.PathLike) -> Predictor:
        from moleblend_jax.finetune.model import FinetuneModel

        manifest, run_dir = read_manifest(workdir)
        model = FinetuneModel(
            config=ml_collections.ConfigDict(manifest["model"]),
            num_tasks=len(manifest["task_names"]),
            use_2d=manifest["use_2d"],
            use_3d=manifest["use_3d"],
        )
        params = [load_seed_params(manifest, run_dir, s) for s in manifest["seeds"]]
        return cls(manifest, model, params)

    @property
    def task_names(self) -> list[str]:
        return list(self.manifest["task_names"])

    @property
    def seeds(self) -> list[int]:
        return [int(s["seed"]) for s in self.manifest["seeds"]]

    def predict(self, records: list[dict], batch_size: int | None = None, progress=False):
        """Records (unique ids) -> float32 [S, M, T]: per seed, each record's predictions."""
        from moleblend_jax.data.batching import map_batches, model_inputs
        from moleblend_jax.train.step import jit_apply

        apply = jit_apply(self.model)
        batch_size = batch_size or self.manifest["batch_size"]
        buckets = self.manifest["buckets"]
        out = []
        for params, seed in zip(self.params, self.manifest["seeds"], strict=True):

            def fn(batch, params=params):
                return {"out": apply(params, model_inputs(batch))}

            rows = map_batches(fn, records, batch_size, buckets, progress)
            raw = np.stack([r["out"] for r in rows]).astype(np.float64)
            if self.manifest["task_type"] == "classification":
                out.append(1.0 / (1.0 + np.exp(-raw)))
            else:
                standardizer = Standardizer(
                    np.asarray(seed["label_mean"], np.float32),
                    np.asarray(seed["label_std"], np.float32),
                )
                out.append(standardizer.decode(raw))
        return np.stack(out).astype(np.float32)

    def featurize(self, items, *, from_sdf: bool = False, workers: int = 1, progress=False):
        """Source items -> `input_rows.Featurized` the way the training molecules were (2D, or
        3D with the SDF's coordinates / RDKit conformers)."""
        return featurize_for(self.manifest, items, from_sdf, workers, progress)

    def predict_rows(self, rows, batch_size: int | None = None, progress=False):
        """Featurised rows -> the prediction table (`prediction_table`), one row per input row."""
        records = [r for r in rows.records if r is not None]
        predictions = self.predict(records, batch_size, progress=progress)
        return prediction_table(rows, predictions, self.task_names, self.seeds)


def featurize_for(manifest: dict, items, from_sdf: bool, workers: int, progress=False):
    """Source items featurised as the run's molecules were: its max_atoms, and coordinates
    (from an SDF, else RDKit) only for a 3D model."""
    from moleblend_jax.data import input_rows

    if manifest["use_3d"]:
        conformers = "file" if from_sdf else "rdkit"
    else:
        conformers = "none"
    return input_rows.featurize_rows(
        items, conformers, manifest["max_atoms"], workers, progress, manifest["use_3d"]
    )


def prediction_table(rows, predictions, task_names, seeds):
    """Featurised rows and [S, M_valid, T] predictions -> a DataFrame, one row per input row:
    `id`, `smiles` (as given), per task `<task>` (the mean over seeds), `<task>_std` (ddof 0)
    and `<task>_seed<k>`, then `error` (why a row could not be featurised; its predictions
    empty)."""
    import pandas as pd

    valid = np.asarray(rows.valid)
    full = np.full((len(seeds), len(valid), len(task_names)), np.nan, np.float32)
    full[:, valid] = predictions
    table = {"id": rows.row_ids(), "smiles": rows.inputs}
    with np.errstate(invalid="ignore"):
        mean, std = full.mean(axis=0), full.std(axis=0)
    for t, task in enumerate(task_names):
        table[task] = mean[:, t]
        table[f"{task}_std"] = std[:, t]
        for s, seed in enumerate(seeds):
            table[f"{task}_seed{seed}"] = full[s, :, t]
    table["error"] = rows.errors
    return pd.DataFrame(table)
