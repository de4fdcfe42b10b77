"""What prediction needs from a fine-tuning run: saved in its workdir, loaded back, applied.

Layout (written by `trainer.run`):
  WORKDIR/predictor.json       format, dataset, task_names, task_type, use_2d / use_3d,
                               conformers (how the training molecules got coordinates),
                               max_atoms, buckets, batch_size, smiles_column, id_column,
                               model (config.model) and, per seed, its checkpoint directory,
                               best_epoch and the label standardisation label_mean / label_std
                               [T] (`losses.Standardizer`).
  WORKDIR/checkpoints/seed_<k> an orbax checkpoint at step best_epoch holding
                               {"params": the best-validation params}
                               (`train.checkpoint.restore_params` reads it).
"""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections
import numpy as np

from moleblend_jax.errors import UserError
from moleblend_jax.finetune.losses import Standardizer
from moleblend_jax.train.paths import as_path

PREDICTOR_FILE = "predictor.json"
FORMAT = 1


def seed_checkpoint_dir(workdir: str | os.PathLike, seed: int):
    """WORKDIR/checkpoints/seed_<seed>."""
    return as_path(workdir) / "checkpoints" / f"seed_{seed}"


def save_params(directory: str | os.PathLike, step: int, params) -> None:
    """Host params -> an orbax checkpoint at `step` holding {"params": params} (replacing any
    checkpoint already there, e.g. of an earlier run in the same workdir)."""
    from moleblend_jax.train.checkpoint import Checkpointer

    directory = as_path(directory)
    if directory.exists():
        directory.rmtree()
    checkpointer = Checkpointer(directory, save_every=1, keep=1)
    checkpointer.save(step, {"params": params}, force=True)
    checkpointer.close()


def write_manifest(
    workdir: str | os.PathLike,
    config: ml_collections.ConfigDict,
    task,
    conformers: str,
    seeds: list[dict],
) -> dict:
    """WORKDIR/predictor.json from the run's config, its `loop.FinetuneTask`, the conformer
    mode of its data and its seeds' results entries; returns the manifest."""
    manifest = {
        "format": FORMAT,
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
    (as_path(workdir) / PREDICTOR_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(workdir: str | os.PathLike) -> dict:
    """WORKDIR/predictor.json; UserError when WORKDIR is not a fine-tuning workdir."""
    path = as_path(workdir) / PREDICTOR_FILE
    if not path.exists():
        raise UserError(
            f"{workdir} is not a fine-tuning workdir (no {PREDICTOR_FILE}); pass the --workdir "
            "of experiments/finetune.py"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise UserError(f"{path}: format {manifest.get('format')} is not {FORMAT}")
    return manifest


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
        from moleblend_jax.train.checkpoint import restore_params

        manifest = read_manifest(workdir)
        model = FinetuneModel(
            config=ml_collections.ConfigDict(manifest["model"]),
            num_tasks=len(manifest["task_names"]),
            use_2d=manifest["use_2d"],
            use_3d=manifest["use_3d"],
        )
        params = [restore_params(as_path(workdir) / s["checkpoint"]) for s in manifest["seeds"]]
        return cls(manifest, model, params)

    @property
    def task_names(self) -> list[str]:
        return list(self.manifest["task_names"])

    @property
    def seeds(self) -> list[int]:
        return [int(s["seed"]) for s in self.manifest["seeds"]]

    def predict(self, records: list[dict], batch_size: int | None = None, progress=False):
        """Records (unique ids) -> float32 [S, M, T]: per seed, each record's predictions."""
        import jax

        from moleblend_jax.data.batching import map_batches, model_inputs

        model = self.model
        apply = jax.jit(lambda params, batch: model.apply({"params": params}, batch))
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
