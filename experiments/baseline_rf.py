"""Morgan-fingerprint random-forest baseline on the fine-tuning data sets.

Usage:
  python experiments/baseline_rf.py --dataset=esol [--split=scaffold] [--seeds=0,1,2] \
      [--path=CSV] --out=benchmarks/rf_baseline/esol.json

Uses the same data set registry, splits and metrics as fine-tuning and writes the same
results.json format (``"init": "rf_baseline"``), so experiments/compare.py can put it in the table.
Multi-task classification trains one forest per task on the rows where that task is labelled.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import app, flags

if __package__ in (None, ""):  # Run as a script from a checkout: make the package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moleblend_jax.finetune import datasets, metrics, splits  # noqa: E402
from moleblend_jax.finetune.results import summarize  # noqa: E402

_DATASET = flags.DEFINE_string("dataset", None, "Registered data set name.", required=True)
_PATH = flags.DEFINE_string("path", None, "MoleculeNet CSV; default: the bundled copy.")
_SPLIT = flags.DEFINE_enum("split", None, ["scaffold", "random"], "Default: the data set's.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Forest (and random-split) seeds.")
_OUT = flags.DEFINE_string("out", None, "results.json to write.", required=True)
_TREES = flags.DEFINE_integer("n_estimators", 500, "Trees per forest.")
_JOBS = flags.DEFINE_integer("n_jobs", 2, "Worker processes for scikit-learn.")
_RADIUS = flags.DEFINE_integer("radius", 2, "Morgan radius.")
_BITS = flags.DEFINE_integer("bits", 2048, "Morgan fingerprint length.")


def morgan_fingerprints(smiles: Sequence[str], radius: int = 2, bits: int = 2048) -> np.ndarray:
    """[M] SMILES -> [M, bits] uint8 Morgan (ECFP-like) bit vectors; all-zero for invalid SMILES."""
    from rdkit import Chem, DataStructs, RDLogger
    from rdkit.Chem import rdFingerprintGenerator

    RDLogger.DisableLog("rdApp.*")
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)
    features = np.zeros((len(smiles), bits), dtype=np.uint8)
    for row, smi in enumerate(smiles):
        mol = Chem.MolFromSmiles(smi)
        if mol is not None:
            DataStructs.ConvertToNumpyArray(generator.GetFingerprint(mol), features[row])
    return features


def fit_predict(
    task_type: str,
    features: np.ndarray,
    labels: np.ndarray,
    split: dict[str, np.ndarray],
    seed: int,
    n_estimators: int,
    n_jobs: int,
) -> np.ndarray:
    """Fits on split['train'] and returns [M, T] predictions (P(class 1) or values) for all rows."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    train = split["train"]
    preds = np.full(labels.shape, np.nan, dtype=np.float64)
    for task in range(labels.shape[1]):
        rows = train[~np.isnan(labels[train, task])]
        targets = labels[rows, task]
        if rows.size == 0:
            continue
        if task_type == "classification":
            if np.unique(targets).size < 2:  # One class only: constant score.
                preds[:, task] = float(targets[0])
                continue
            model = RandomForestClassifier(
                n_estimators=n_estimators, n_jobs=n_jobs, random_state=seed
            )
            model.fit(features[rows], targets.astype(np.int64))
            preds[:, task] = model.predict_proba(features)[:, list(model.classes_).index(1)]
        else:
            model = RandomForestRegressor(
                n_estimators=n_estimators, n_jobs=n_jobs, random_state=seed
            )
            model.fit(features[rows], targets)
            preds[:, task] = model.predict(features)
    return preds


def run(
    name: str,
    path: str | None,
    split_kind: str | None,
    seeds: Sequence[int],
    n_estimators: int = 500,
    n_jobs: int = 2,
    radius: int = 2,
    bits: int = 2048,
) -> dict:
    """The results.json dict for the baseline on one data set."""
    spec = datasets.get_spec(name)
    split_kind = split_kind or spec.default_split
    smiles, labels, task_names = datasets.load_dataset(spec.name, path)
    features = morgan_fingerprints(smiles, radius, bits)
    mask = ~np.isnan(labels)
    per_seed = []
    for seed in seeds:
        start = time.time()
        split = splits.make_split(split_kind, smiles, seed)
        preds = fit_predict(spec.task_type, features, labels, split, seed, n_estimators, n_jobs)
        scores = {
            part: metrics.compute_metric(
                spec.metric, labels[split[part]], preds[split[part]], mask[split[part]]
            )[0]
            for part in ("valid", "test")
        }
        per_seed.append(
            {
                "seed": int(seed),
                "best_epoch": 0,
                "valid": scores["valid"],
                "test": scores["test"],
                "epochs_run": 0,
                "seconds": round(time.time() - start, 1),
            }
        )
    return summarize(
        spec,
        split_kind,
        init="rf_baseline",
        init_checkpoint=None,
        seeds=per_seed,
        config={
            "model": "RandomForest",
            "n_estimators": n_estimators,
            "fingerprint": f"morgan r={radius} {bits} bits",
            "num_molecules": len(smiles),
            "tasks": task_names,
            "source": path or "bundled",
        },
    )


def main(argv: Sequence[str]) -> None:
    del argv
    result = run(
        _DATASET.value,
        _PATH.value,
        _SPLIT.value,
        [int(s) for s in _SEEDS.value],
        _TREES.value,
        _JOBS.value,
        _RADIUS.value,
        _BITS.value,
    )
    out = Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("dataset", "metric", "test_mean", "test_std")}))


if __name__ == "__main__":
    app.run(main)
