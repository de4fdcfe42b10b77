"""Models fitted on fixed features of fine-tuning's molecules: what the random forest
(experiments/baseline_rf.py) and the linear probe (experiments/linear_probe.py) share.

`load_data` gets the records exactly as fine-tuning does (`finetune.task_data.load`: the same
molecules, the same skips, the same record ids); `score_seeds` splits them with fine-tuning's
split over record ids (or reads a split file a fine-tuning run saved) and scores a model's
predictions with fine-tuning's metric, one results.json seed entry per seed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from moleblend_jax import atomic
from moleblend_jax.configs import finetune as finetune_configs
from moleblend_jax.finetune import metrics, splits, task_data

# (seed, row positions of train / valid / test) -> predictions [M, T] for every row (class-1
# probabilities or values, NaN where a task has no model).
FitPredict = Callable[[int, dict[str, np.ndarray]], np.ndarray]


def load_data(
    name: str,
    path: str | None,
    workdir: str | os.PathLike,
    *,
    max_molecules: int = 0,
    max_atoms: int | None = None,
    **file_settings: str,
) -> tuple[task_data.TaskData, int]:
    """-> (fine-tuning's records of data set `name`, the max_atoms used). Built as with
    configs/finetune.py (max_atoms None: its default); `file_settings` are the config's
    smiles_column, label_columns, task_type, id_column, split_column of your own file."""
    config = finetune_configs.get_config()
    config.dataset = name
    config.dataset_path = path
    config.max_molecules = max_molecules
    config.data.max_atoms = max_atoms or config.data.max_atoms
    config.update(file_settings)
    return task_data.load(config, workdir), config.data.max_atoms


def labels_of(data: task_data.TaskData) -> np.ndarray:
    """[M, T] float labels of the records, NaN = missing."""
    return np.stack([r["labels"] for r in data.records])


def score_seeds(
    data: task_data.TaskData,
    split_kind: str,
    seeds: Sequence[int],
    fit_predict: FitPredict,
    *,
    workdir: str | os.PathLike,
    split_file: str | None = None,
) -> list[dict]:
    """One results.json seed entry per seed: valid and test metric of `fit_predict`'s
    predictions on that seed's split (saved in `workdir` under fine-tuning's names, or read
    from `split_file`); best_epoch and epochs_run are 0 (no epochs)."""
    labels = labels_of(data)
    mask = ~np.isnan(labels)
    per_seed = []
    for seed in seeds:
        start = time.time()
        split = task_data.seed_split(data, split_kind, seed, workdir=workdir, split_file=split_file)
        rows = splits.id_positions(split, data.ids)
        preds = fit_predict(int(seed), rows)
        scores = {
            part: metrics.compute_metric(
                data.spec.metric, labels[rows[part]], preds[rows[part]], mask[rows[part]]
            )[0]
            for part in ("valid", "test")
        }
        per_seed.append(
            {
                "seed": int(seed),
                "best_epoch": 0,
                "valid": float(scores["valid"]),
                "test": float(scores["test"]),
                "epochs_run": 0,
                "seconds": round(time.time() - start, 1),
            }
        )
    return per_seed


def protocol(
    data: task_data.TaskData, max_molecules: int, max_atoms: int, split_file: str | None
) -> dict:
    """The results.json config keys that say which molecules were scored (compare.py reads
    num_molecules, the data set's size)."""
    return {
        "num_molecules": data.num_source_molecules,
        "tasks": list(data.task_names),
        "max_molecules": max_molecules,
        "max_atoms": max_atoms,
        "split_file": split_file,
    }


def write_results(result: dict, out: str | os.PathLike) -> None:
    """A results.json dict -> `out` (its folder created), and its summary line on stdout."""
    atomic.write_json(out, result, indent=2)
    print(json.dumps({k: result[k] for k in ("dataset", "metric", "test_mean", "test_std")}))
