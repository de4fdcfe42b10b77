"""Molecule-level descriptors for fine-tuning's extra features (chemprop's features
generators): Morgan count fingerprints and RDKit's 2D descriptors, raw. Numpy and RDKit only;
the scaling fitted on a train split lives in `finetune.extra_features`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import Descriptors, rdFingerprintGenerator

# Morgan (ECFP-like) counts: radius 2 (ECFP4), folded to 2048 bins, chemprop's morgan_count.
MORGAN_RADIUS = 2
MORGAN_SIZE = 2048
MAX_COUNT = 255  # Counts are kept as uint8; a bin hit more often is clipped (rare).


def rdkit_2d_names() -> list[str]:
    """The names of every descriptor in rdkit.Chem.Descriptors' list, in its order (this
    RDKit's: 217 for 2026.09)."""
    return [name for name, _ in Descriptors._descList]


def morgan_counts(mols: Sequence[Chem.Mol]) -> np.ndarray:
    """Molecules [M] -> [M, MORGAN_SIZE] uint8 Morgan count vectors (radius MORGAN_RADIUS)."""
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=MORGAN_RADIUS, fpSize=MORGAN_SIZE)
    out = np.zeros((len(mols), MORGAN_SIZE), np.uint8)
    for i, mol in enumerate(mols):
        counts = generator.GetCountFingerprintAsNumPy(mol)
        out[i] = np.minimum(counts, MAX_COUNT)
    return out


def _value(function, mol) -> float:
    """One descriptor's value; NaN where RDKit raises or gives a non-finite number."""
    try:
        value = float(function(mol))
    except Exception:  # noqa: BLE001 - RDKit descriptors raise many kinds on odd molecules.
        return math.nan
    return value if math.isfinite(value) else math.nan


def rdkit_2d(mols: Sequence[Chem.Mol]) -> np.ndarray:
    """Molecules [M] -> [M, len(rdkit_2d_names())] float64 raw descriptor values, NaN where a
    descriptor fails or is not finite (e.g. Ipc overflowing)."""
    RDLogger.DisableLog("rdApp.*")
    functions = [function for _, function in Descriptors._descList]
    return np.array([[_value(f, mol) for f in functions] for mol in mols], np.float64).reshape(
        len(mols), len(functions)
    )


def mols_from_smiles(smiles: Sequence[str]) -> list[Chem.Mol]:
    """Canonical SMILES of records -> RDKit molecules; ValueError naming one RDKit cannot read
    (records' SMILES were written by RDKit, so this is a bug, not a user mistake)."""
    RDLogger.DisableLog("rdApp.*")
    mols = []
    for text in smiles:
        mol = Chem.MolFromSmiles(text)
        if mol is None:
            raise ValueError(f"RDKit cannot read the record SMILES {text!r}")
        mols.append(mol)
    return mols
