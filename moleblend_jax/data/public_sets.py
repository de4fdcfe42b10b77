"""The public data sets as sources: PCQM4Mv2 (SDF + data.csv.gz, downloaded by the user), and
the bundled QM9 (qm9pack, DFT coordinates) and MOSES subset (SMILES; RDKit conformers).
"""

from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
import math
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np

from moleblend_jax.chem import qm9
from moleblend_jax.data.source_base import (
    Source,
    SourceItem,
    check_file,
    iter_sdf_blocks,
    sdf_title,
)

PCQM_SDF_NAME = "pcqm4m-v2-train.sdf"
PCQM_LABELS_NAME = "data.csv.gz"
# 200,000 drug-like SMILES of the MOSES training set, in a seeded random order (so any prefix
# is a random sample); how it was made: moleblend_jax/sample_data/README.md.
MOSES_FILE = "moses_train_200k.smi.gz"
MOSES_NUM_MOLECULES = 200_000


# ---------------------------------------------------------------- PCQM4Mv2
def pcqm4mv2_source(sdf_path: str, labels_csv: str | None = None) -> Source:
    """PCQM4Mv2 train split: graph and DFT coordinates from `pcqm4m-v2-train.sdf`; the HOMO-LUMO
    gap (eV) from `data.csv.gz` looked up by the `idx` column = SDF block index (SPEC 9)."""
    if os.path.isdir(sdf_path):
        sdf_path = os.path.join(sdf_path, PCQM_SDF_NAME)
    check_file(sdf_path)
    if labels_csv is None:
        here = os.path.dirname(sdf_path)
        for candidate in (
            os.path.join(here, PCQM_LABELS_NAME),
            os.path.join(here, "raw", PCQM_LABELS_NAME),
        ):
            if os.path.exists(candidate):
                labels_csv = candidate
                break
    gaps = None
    if labels_csv is not None:
        import pandas as pd

        check_file(labels_csv)
        table = pd.read_csv(labels_csv, usecols=["idx", "homolumogap"])
        idx = table["idx"].to_numpy(np.int64)
        gaps = np.full(int(idx.max()) + 1 if len(idx) else 0, np.nan, np.float64)
        gaps[idx] = table["homolumogap"].to_numpy(np.float64)

    def items():
        for index, block in enumerate(iter_sdf_blocks(sdf_path)):
            label = None
            if gaps is not None:
                label = (float(gaps[index]) if index < len(gaps) else math.nan,)
            yield SourceItem(index, mol_block=block, labels=label, name=sdf_title(block))

    return Source(
        name=os.path.abspath(sdf_path),
        kind="pcqm4mv2",
        label_names=["homolumogap"] if gaps is not None else [],
        items=items,
        default_conformers="file",
        notes=dict(labels_csv=os.path.abspath(labels_csv) if labels_csv else None),
    )


# ---------------------------------------------------------------- QM9 (qm9pack)
def qm9_frames(columns: Sequence[str], nrows: int | None = None, chunksize: int = 20_000):
    """qm9pack's CSVs as DataFrames of `columns`, in QM9 index order; `nrows` stops after that
    many rows.

    The files are found without importing qm9pack: its __init__ imports pkg_resources, which
    setuptools >= 81 no longer ships.
    """
    import pandas as pd

    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("QM9 needs the qm9pack package (pip install qm9pack)")
    folder = pathlib.Path(spec.submodule_search_locations[0]) / "data"
    remaining = nrows
    for name in qm9.FILES:
        for chunk in pd.read_csv(folder / name, usecols=list(columns), chunksize=chunksize):
            if remaining is not None:
                chunk = chunk.iloc[:remaining]
                remaining -= len(chunk)
            yield chunk
            if remaining is not None and remaining <= 0:
                return


def qm9_source() -> Source:
    """The 130,831 QM9 molecules bundled with `qm9pack`. id = QM9 `Index` (1..133885);
    coordinates = DFT geometry (heavy atoms); labels = the 12 targets of `chem.qm9.TARGETS`,
    converted to label units (energies in eV)."""
    columns = ["Index", "SMILES", "Elements", "XYZ_Ang", *qm9.COLUMNS]

    def items():
        for chunk in qm9_frames(columns):
            labels = qm9.to_label_units(chunk[list(qm9.COLUMNS)].to_numpy(np.float64))
            rows = zip(
                chunk["Index"].tolist(),
                chunk["SMILES"].tolist(),
                chunk["Elements"].tolist(),
                chunk["XYZ_Ang"].tolist(),
                labels.tolist(),
                strict=True,
            )
            for index, smiles, elements, xyz, values in rows:
                yield SourceItem(
                    int(index), smiles=smiles, labels=tuple(values), elements=elements, xyz=xyz
                )

    return Source(
        name="qm9",
        kind="qm9",
        label_names=list(qm9.TASKS),
        items=items,
        total=qm9.NUM_MOLECULES,
        default_conformers="file",
        notes=dict(package="qm9pack", label_units=qm9.LABEL_UNITS),
    )


# ---------------------------------------------------------------- MOSES (bundled subset)
def moses_source() -> Source:
    """The bundled MOSES subset (drug-like ZINC molecules, SMILES only): id = 0-based line of
    the subset after its header; coordinates by RDKit (default conformers `rdkit`)."""
    resource = importlib.resources.files("moleblend_jax").joinpath("sample_data", MOSES_FILE)

    def items():
        with resource.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
            next(f)  # Header line "SMILES".
            for index, line in enumerate(f):
                yield SourceItem(index, smiles=line.strip())

    return Source(
        name="moses",
        kind="moses",
        label_names=[],
        items=items,
        total=MOSES_NUM_MOLECULES,
        notes=dict(file=MOSES_FILE, origin="molsets 0.3.1 train.csv.gz (MIT)"),
    )


# Inputs named, not given as a path: `--input=qm9` / `--input=moses`.
BUNDLED_SOURCES: dict[str, Callable[[], Source]] = {"qm9": qm9_source, "moses": moses_source}
