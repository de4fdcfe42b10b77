"""The paper's fine-tuning data: a Uni-Mol `molecular_property_prediction` directory
(`config.dataset="unimol_lmdb"`, `config.dataset_path=DIR` holding train.lmdb, valid.lmdb and
test.lmdb; the format in `data/unimol_lmdb.py`), split as its files are (`split="files"`).

Tasks: a record's `target` holds T numbers, named `target` (T = 1) or `target_0` ..
`target_{T-1}` (the files carry no names). The task type is `config.task_type` when given,
else the registered data set's when DIR is named as one of Uni-Mol's sets (`bbbp`, `lipo`,
...), else classification when every label is 0, 1 or -1. Classification labels of -1 are
missing labels (Uni-Mol's multi-task BCE masks them): they become NaN, masked in the loss and
the metric. A DIR named as a registered data set keeps its name and metric (so `compare` puts
the run next to the paper's number for that set); any other is `unimol_lmdb`.

Modality: 2D (`config.modality` "" or "2d"; SPEC 7: MoleculeNet fine-tuning is 2D-only), or
"3d": the 3D encoder on each record's first conformer (hydrogens stripped:
`data.unimol_lmdb.heavy_atom_coordinates`).
"""

from __future__ import annotations

import dataclasses
import logging
import os

import ml_collections
import numpy as np

from moleblend_jax.data import unimol_lmdb
from moleblend_jax.errors import UserError
from moleblend_jax.finetune import catalog

DATASET = "unimol_lmdb"
SPLIT = "files"
# Uni-Mol's directory names of the sets registered here under another name.
UNIMOL_NAMES = {"lipo": "lipophilicity"}
MISSING_CLASS_LABEL = -1.0


@dataclasses.dataclass(frozen=True)
class LmdbTable:
    """A Uni-Mol directory, read: rows in file order (train, valid, test), ids 0..M-1."""

    spec: catalog.DatasetSpec
    molecules: list[unimol_lmdb.LmdbMolecule]  # [M]
    labels: np.ndarray  # [M, T] float32, NaN = missing.
    task_names: tuple[str, ...]

    @property
    def row_splits(self) -> list[str]:
        """[M] the file of each row: "train" | "valid" | "test"."""
        return [m.part for m in self.molecules]


def registered_name(directory: str) -> str | None:
    """The registered data set a Uni-Mol directory is named after, or None."""
    base = os.path.basename(os.path.normpath(directory)).lower()
    base = UNIMOL_NAMES.get(base, base)
    return base if base in catalog.DATASETS and base != "qm9" else None


def _num_tasks(molecules: list[unimol_lmdb.LmdbMolecule], directory: str) -> int:
    sizes = {}
    for m in molecules:
        if m.target is not None and not m.skip_reason:
            sizes.setdefault(m.target.size, m)
    if not sizes:
        raise UserError(f"{directory}: no record with a smi and a target")
    if len(sizes) > 1:
        shown = ", ".join(f"{m.name}: {n}" for n, m in sorted(sizes.items())[:3])
        raise UserError(f"{directory}: records hold targets of different lengths ({shown})")
    return next(iter(sizes))


def _task_type(labels: np.ndarray, given: str, known: str | None, directory: str) -> str:
    if given:
        if given not in catalog.TASK_TYPES:
            raise UserError(
                f"config.task_type={given!r}; use one of {catalog.TASK_TYPES} or leave empty"
            )
        return given
    if known:
        return catalog.DATASETS[known].task_type
    present = labels[~np.isnan(labels)]
    binary = present.size > 0 and np.isin(present, [MISSING_CLASS_LABEL, 0.0, 1.0]).all()
    task_type = "classification" if binary else "regression"
    logging.info(
        "%s: task_type inferred as %s; set --config.task_type to override.", directory, task_type
    )
    return task_type


def _class_labels(labels: np.ndarray, directory: str) -> np.ndarray:
    """-1 -> NaN (missing); anything but 0, 1, -1 and NaN is refused."""
    present = labels[~np.isnan(labels)]
    bad = np.setdiff1d(np.unique(present), [MISSING_CLASS_LABEL, 0.0, 1.0])
    if bad.size:
        raise UserError(f"{directory}: classification targets must be 0, 1 or -1, found {bad[:5]}")
    return np.where(labels == MISSING_CLASS_LABEL, np.nan, labels)


def read_table(config: ml_collections.ConfigDict) -> LmdbTable:
    """`config.dataset_path` (a Uni-Mol directory) -> LmdbTable; UserError for the user's
    mistakes (a missing file, targets of mixed lengths, non-0/1 classes)."""
    directory = config.dataset_path
    if not directory:
        raise UserError(f"config.dataset={DATASET} needs --config.dataset_path=DIR")
    directory = os.fspath(directory)
    molecules = unimol_lmdb.read_set(directory)
    num_tasks = _num_tasks(molecules, directory)
    labels = np.full((len(molecules), num_tasks), np.nan)
    for row, m in enumerate(molecules):
        if m.target is not None and m.target.size == num_tasks:
            labels[row] = m.target
    known = registered_name(directory)
    task_type = _task_type(labels, config.task_type, known, directory)
    if task_type == "classification":
        labels = _class_labels(labels, directory)
    modality = config.get("modality", "")
    if modality not in ("", "2d", "3d"):
        raise UserError(f"config.modality={modality!r}; use '', '2d' or '3d'")
    names = ("target",) if num_tasks == 1 else tuple(f"target_{t}" for t in range(num_tasks))
    if known and catalog.DATASETS[known].task_type == task_type:
        metric = catalog.DATASETS[known].metric
    else:
        metric = "roc_auc" if task_type == "classification" else "rmse"
    spec = catalog.DatasetSpec(
        name=known or DATASET,
        task_type=task_type,
        smiles_column="smi",
        label_columns=names,
        metric=metric,
        default_split=SPLIT,
        needs_3d=modality == "3d",
        num_tasks=num_tasks,
        source=f"Uni-Mol LMDB {os.path.abspath(directory)}",
        coordinates_in_file=True,
    )
    return LmdbTable(spec, molecules, labels.astype(np.float32), names)


def source(table: LmdbTable, rows: np.ndarray, where: str) -> unimol_lmdb.Source:
    """The shard writer's source of `rows` of `table` (ids = row numbers)."""
    return unimol_lmdb.lmdb_source(
        f"{table.spec.name} ({where})",
        [table.molecules[i] for i in rows],
        ids=rows.tolist(),
        labels=table.labels[rows],
        label_names=table.task_names,
        with_coordinates=table.spec.needs_3d,
    )
