"""The user's own fine-tuning data: any CSV (`config.dataset="csv"`) or SDF ("sdf") file.

`read_table(config)` reads `config.dataset_path` into a `UserTable`: one row per data row of the
file (CSV) or record (SDF), keyed by its 0-based position, with labels [M, T] (NaN = blank),
the task type (given, or inferred from the labels and said so in the log), an optional id per
row (`config.id_column`; SDF: the title line) and an optional train/valid/test part per row
(`config.split_column`). Every mistake in the file or the flags raises a one-line `UserError`
that names what the file does have. SDF labels are SD properties; the molecule, with its
coordinates, is the record's mol block. The modality is decided from every record: a file
whose records all have 3D coordinates is fine-tuned in 3D (as QM9), one with none in 2D, and
a mix is refused unless `config.modality` names the mode (3d: the others are skipped and
counted as no_3d_coordinates). Pure numpy/pandas (+ RDKit for the 3D check); no jax.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import ml_collections
import numpy as np
import pandas as pd

from moleblend_jax.data import sources
from moleblend_jax.errors import UserError
from moleblend_jax.finetune.catalog import TASK_TYPES, DatasetSpec

FORMATS = ("csv", "sdf")
# Split-column cells (lower-cased, stripped) -> the split they name.
SPLIT_CELLS = {
    "train": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "test": "test",
}
# A task needs this many labels (one each for train, valid and test, and a few to learn from).
MIN_LABELS = 5
# Labels beyond this magnitude are a unit or export mistake (and overflow the float32 loss).
MAX_ABS_LABEL = 1e10
MOL_BLOCK = "\x00mol_block"  # Frame column holding an SDF record (never a real column name).


@dataclasses.dataclass(frozen=True)
class UserTable:
    """A user file, read: rows in file order (ids = 0-based row positions)."""

    spec: DatasetSpec
    smiles: list[str]  # [M]; "" for SDF rows (the molecule is the mol block).
    mol_blocks: list[str] | None  # [M] SDF records, or None for a CSV.
    labels: np.ndarray  # [M, T] float32, NaN = missing.
    task_names: tuple[str, ...]
    names: list[str]  # [M] the id column's cells (SDF: titles); "" = none.
    row_splits: list[str] | None  # [M] "train" | "valid" | "test" from split_column, or None.
    skip_reasons: list[str] | None = None  # [M] why a row is skipped ("" = kept), or None.


def _columns(text: str) -> list[str]:
    return [c.strip() for c in str(text or "").split(",") if c.strip()]


def _read_frame(path: str, kind: str) -> pd.DataFrame:
    """The file as text cells: CSV columns, or one column per SD property plus `MOL_BLOCK`."""
    try:
        sources.check_file(path)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"config.dataset_path: {err}") from None
    if kind == "csv":
        sources.require_unique_columns(path)
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
            raise UserError(f"{path}: not a readable CSV file ({err})") from None
    blocks = list(sources.iter_sdf_blocks(path))
    rows = [{**sources.sdf_properties(b), MOL_BLOCK: b} for b in blocks]
    return pd.DataFrame(rows).fillna("") if rows else pd.DataFrame({MOL_BLOCK: []})


def _file_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c != MOL_BLOCK]


def _require(frame: pd.DataFrame, path: str, what: str, names: list[str]) -> None:
    missing = [c for c in names if c not in frame.columns or c == MOL_BLOCK]
    if missing:
        raise UserError(
            f"{path}: {what} {missing} not found; the file's columns are {_file_columns(frame)}"
        )


def _default_label_columns(frame: pd.DataFrame, path: str, skip: set[str]) -> list[str]:
    """Every column (not skipped, not id-like) whose non-blank cells are all numbers; the
    other candidates are logged."""
    columns = []
    for column in _file_columns(frame):
        if column in skip or column.strip().lower() in sources._ID_COLUMNS:
            continue
        cells = frame[column].tolist()
        values, bad = sources.parse_numbers(cells)
        if bad or np.isnan(values).all():
            why = sources.bad_cells(cells, bad) if bad else "no values"
            logging.warning("%s: column %r is not a label column: %s.", path, column, why)
        else:
            columns.append(column)
    return columns


def _labels(frame: pd.DataFrame, path: str, columns: list[str]) -> np.ndarray:
    """[M, T] float32; UserError naming the first non-numeric, infinite or absurd cells."""
    out = np.empty((len(frame), len(columns)), np.float32)
    for t, column in enumerate(columns):
        cells = frame[column].tolist()
        values, bad = sources.parse_numbers(cells)
        if bad:
            raise UserError(
                f"{path}: label column {column!r} has {sources.bad_cells(cells, bad)}; labels "
                "must be numbers, blank for missing"
            )
        huge = np.flatnonzero(np.abs(np.nan_to_num(values, nan=0.0)) > MAX_ABS_LABEL)
        if huge.size:
            shown = ", ".join(f"row {r + 1}: {cells[r]!r}" for r in huge[:3])
            raise UserError(
                f"{path}: label column {column!r} has {huge.size} values that are infinite or "
                f"beyond +-{MAX_ABS_LABEL:g} ({shown}); check the units or blank them"
            )
        out[:, t] = values
    return out


def check_tasks(labels: np.ndarray, columns: list[str], task_type: str, path: str) -> None:
    """UserError for a task that cannot be learnt or scored: fewer than MIN_LABELS labels, or
    (classification) a single class."""
    for t, column in enumerate(columns):
        present = labels[:, t][~np.isnan(labels[:, t])]
        if present.size < MIN_LABELS:
            raise UserError(
                f"{path}: label column {column!r} has {present.size} labels (at least "
                f"{MIN_LABELS} are needed); fill it or leave it out of --config.label_columns"
            )
        classes = np.unique(present)
        if task_type == "classification" and classes.size < 2:
            raise UserError(
                f"{path}: label column {column!r} has only class {classes[0]:g} "
                f"({present.size} labels); classification needs both 0 and 1"
            )


def infer_task_type(labels: np.ndarray, given: str, path: str) -> str:
    """`given` checked against the labels, or (given "") "classification" when every label is
    0 or 1, else "regression"; the inference is logged."""
    present = labels[~np.isnan(labels)]
    if given:
        if given not in TASK_TYPES:
            raise UserError(f"config.task_type={given!r}; use one of {TASK_TYPES} or leave empty")
        bad = np.setdiff1d(np.unique(present), [0.0, 1.0])
        if given == "classification" and bad.size:
            raise UserError(
                f"{path}: config.task_type=classification needs 0/1 labels, found {bad[:5]}"
            )
        return given
    binary = present.size > 0 and np.isin(present, [0.0, 1.0]).all()
    task_type = "classification" if binary else "regression"
    logging.info(
        "%s: task_type inferred as %s (%s); set --config.task_type to override.",
        path,
        task_type,
        "every label is 0 or 1" if binary else "labels other than 0/1",
    )
    return task_type


def _row_splits(frame: pd.DataFrame, path: str, column: str) -> list[str]:
    cells = frame[column].astype(str).str.strip().str.lower()
    bad = sorted(set(cells) - set(SPLIT_CELLS))
    if bad:
        raise UserError(
            f"{path}: split column {column!r} holds {bad[:5]}; every cell must be train, valid "
            "or test"
        )
    row_splits = [SPLIT_CELLS[c] for c in cells]
    if "train" not in row_splits or "test" not in row_splits:
        raise UserError(f"{path}: split column {column!r} needs train and test rows")
    return row_splits


MODALITIES = ("", "2d", "3d")
NO_3D = "no_3d_coordinates"


def has_3d_coordinates(block: str) -> bool | None:
    """True when RDKit reads the SDF record with a 3D conformer, False when it reads it
    without one, None when it cannot read it (the shard writer counts it as unreadable)."""
    from rdkit import Chem

    mol = Chem.MolFromMolBlock(block, removeHs=False)
    if mol is None:
        return None
    return mol.GetNumConformers() > 0 and mol.GetConformer().Is3D()


def decide_modality(
    kind: str, blocks: list[str] | None, given: str, path: str
) -> tuple[bool, list[str] | None]:
    """(fine-tune in 3D, per-row skip reasons or None) from `config.modality` and, for an
    SDF, every record's coordinates (see the module docstring)."""
    if given not in MODALITIES:
        raise UserError(f"config.modality={given!r}; use '', '2d' or '3d'")
    if kind != "sdf":
        return given == "3d", None  # CSV: RDKit conformers in 3D.
    found = [has_3d_coordinates(b) for b in blocks]
    with_3d, without = found.count(True), found.count(False)
    if given == "2d":
        return False, None
    if given == "3d":
        if not with_3d:
            raise UserError(f"{path}: config.modality=3d, but no record has 3D coordinates")
        if without:
            logging.warning(
                "%s: %d records without 3D coordinates skipped (%s).", path, without, NO_3D
            )
        return True, [NO_3D if f is False else "" for f in found]
    if with_3d and without:
        raise UserError(
            f"{path}: {with_3d} records have 3D coordinates and {without} do not; choose "
            f"--config.modality=3d (the {without} skipped as {NO_3D}) or --config.modality=2d "
            "(coordinates ignored)"
        )
    return with_3d > 0, None


def read_table(config: ml_collections.ConfigDict) -> UserTable:
    """`config.dataset_path` (CSV or SDF, per `config.dataset`) -> UserTable; see the module
    docstring for the keys read. Raises UserError for the user's mistakes."""
    kind, path = config.dataset, config.dataset_path
    if not path:
        raise UserError(f"config.dataset={kind} needs --config.dataset_path=FILE")
    path = os.fspath(path)
    frame = _read_frame(path, kind)
    if frame.empty:
        raise UserError(f"{path}: no rows")
    id_column, split_column = config.id_column, config.split_column
    for what, name in (("id column", id_column), ("split column", split_column)):
        if name:
            _require(frame, path, what, [name])
    if kind == "csv":
        try:
            smiles_column = sources.find_smiles_column(
                _file_columns(frame), config.smiles_column, path
            )
        except ValueError as err:
            raise UserError(f"{err} with --config.smiles_column=") from None
        smiles = frame[smiles_column].str.strip().tolist()
        blocks = None
        names = frame[id_column].tolist() if id_column else [""] * len(frame)
    else:
        smiles_column = ""
        smiles = [""] * len(frame)
        blocks = frame[MOL_BLOCK].tolist()
        titles = [b.split("\n", 1)[0].strip() for b in blocks]
        names = frame[id_column].tolist() if id_column else titles
    label_columns = _columns(config.label_columns)
    if label_columns:
        _require(frame, path, "label columns", label_columns)
    else:
        skip = {smiles_column, id_column, split_column}
        label_columns = _default_label_columns(frame, path, skip)
        if not label_columns:
            raise UserError(
                f"{path}: no numeric label column found; name them with "
                f"--config.label_columns=a,b (the file's columns are {_file_columns(frame)})"
            )
        logging.info("%s: label columns %s (all numeric columns).", path, label_columns)
    labels = _labels(frame, path, label_columns)
    row_splits = _row_splits(frame, path, split_column) if split_column else None
    task_type = infer_task_type(labels, config.task_type, path)
    check_tasks(labels, label_columns, task_type, path)
    needs_3d, skip_reasons = decide_modality(kind, blocks, config.get("modality", ""), path)
    if kind == "sdf":
        modality = "3D (the file's coordinates)" if needs_3d else "2D"
        logging.info("%s: %s fine-tuning.", path, modality)
    spec = DatasetSpec(
        name=kind,
        task_type=task_type,
        smiles_column=smiles_column,
        label_columns=tuple(label_columns),
        metric="roc_auc" if task_type == "classification" else "rmse",
        default_split="column" if split_column else "scaffold",
        needs_3d=needs_3d,
        num_tasks=len(label_columns),
        source=os.path.abspath(path),
    )
    return UserTable(
        spec=spec,
        smiles=smiles,
        mol_blocks=blocks,
        labels=labels,
        task_names=tuple(label_columns),
        names=[str(n) for n in names],
        row_splits=row_splits,
        skip_reasons=skip_reasons,
    )
