"""Morgan-fingerprint random-forest baseline on the fine-tuning data sets.

Usage:
  python experiments/baseline_rf.py --dataset=esol [--split=scaffold] [--seeds=0,1,2] \
      [--dataset_path=CSV] [--max_molecules=M] [--split_file=SPLIT.json] [--workdir=DIR] \
      --out=benchmarks/rf_baseline/esol.json
  python experiments/baseline_rf.py --dataset=csv --dataset_path=mine.csv --label_columns=y \
      --split_column=split --out=rf.json   # your own file, fine-tuning's arguments

Gets its molecules exactly as fine-tuning does (`finetune.baselines`, shared with
experiments/linear_probe.py: the same records, built through the shard writer, the same
molecules skipped) and splits them with the same function over record ids, so the forest and
the network see the same train/valid/test molecules by construction; `--split_file` reads a
split a fine-tuning run saved. Writes the same results.json format (``"init": "rf_baseline"``),
so experiments/compare.py can put it in the table. Multi-task classification trains one forest
per task on the rows where that task is labelled.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import app, flags

from moleblend_jax.cli import dataset_flags
from moleblend_jax.errors import exit_on_user_error
from moleblend_jax.finetune import baselines
from moleblend_jax.finetune.results import summarize

dataset_flags.define(own_files=True)
_SPLIT = flags.DEFINE_enum(
    "split", None, ["scaffold", "random", "column"], "Default: the data set's."
)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Forest (and random-split) seeds.")
_OUT = flags.DEFINE_string("out", None, "results.json to write.", required=True)
_SPLIT_FILE = flags.DEFINE_string(
    "split_file", None, "Read this split (record ids) for every seed."
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Shards and the splits made (split_<kind>_seed<k>.json); default: a temp dir."
)
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
    """Fits on split['train'] (row positions) and returns [M, T] predictions (P(class 1) or
    values) for all rows."""
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
    *,
    workdir: str | Path,
    max_molecules: int = 0,
    max_atoms: int | None = None,
    split_file: str | None = None,
    **file_settings: str,
) -> dict:
    """The results.json dict for the baseline on one data set; its data as fine-tuning with
    configs/finetune.py (max_atoms None: the config's; `file_settings`: the config's
    smiles_column, label_columns, task_type, id_column, split_column of your own file), splits
    made saved in workdir under fine-tuning's names."""
    data, max_atoms = baselines.load_data(
        name, path, workdir, max_molecules=max_molecules, max_atoms=max_atoms, **file_settings
    )
    split_kind = split_kind or data.spec.default_split
    features = morgan_fingerprints([str(r["smiles"]) for r in data.records], radius, bits)
    labels = baselines.labels_of(data)

    def forest(seed: int, rows: dict[str, np.ndarray]) -> np.ndarray:
        return fit_predict(data.spec.task_type, features, labels, rows, seed, n_estimators, n_jobs)

    per_seed = baselines.score_seeds(
        data, split_kind, seeds, forest, workdir=workdir, split_file=split_file
    )
    return summarize(
        data.spec,
        split_kind,
        init="rf_baseline",
        init_checkpoint=None,
        seeds=per_seed,
        config={
            "model": "RandomForest",
            "n_estimators": n_estimators,
            "fingerprint": f"morgan r={radius} {bits} bits",
            "source": path or "bundled",
            **baselines.protocol(data, max_molecules, max_atoms, split_file),
        },
        num_records=len(data.records),
        skipped=data.skipped,
    )


@exit_on_user_error
def main(argv: Sequence[str]) -> None:
    del argv
    with tempfile.TemporaryDirectory() as scratch:
        result = run(
            **dataset_flags.values(),
            split_kind=_SPLIT.value,
            seeds=[int(s) for s in _SEEDS.value],
            n_estimators=_TREES.value,
            n_jobs=_JOBS.value,
            radius=_RADIUS.value,
            bits=_BITS.value,
            workdir=_WORKDIR.value or scratch,
            split_file=_SPLIT_FILE.value,
        )
    baselines.write_results(result, _OUT.value)


if __name__ == "__main__":
    app.run(main)
