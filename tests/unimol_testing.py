"""Writes small data sets in Uni-Mol's `molecular_property_prediction` LMDB layout, as Uni-Mol's
preprocessing does: `atoms` of `AddHs(MolFromSmiles(smi))`, RDKit conformers of that
molecule (hydrogens included), pickled dicts keyed by the record index as text."""

from __future__ import annotations

import os
import pickle

import lmdb
import numpy as np
from rdkit import Chem
from rdkit.Chem import AllChem

# Small drug-like and simple molecules; each embeds in milliseconds.
SMILES = (
    "CCO", "CC(=O)O", "c1ccccc1O", "CCN(CC)CC", "OC1CCCCC1", "c1ccncc1", "CC(C)Cl", "O=C1CCCN1",
    "CCOC(C)=O", "Cc1ccccc1", "NC(=O)c1ccccc1", "CC#N", "C1CCOC1", "CC(C)(C)O", "c1ccc2ccccc2c1",
    "OCC(O)CO", "CCCCCC", "Clc1ccccc1", "CSC", "COc1ccccc1", "CC(N)C(=O)O", "C=CC=C", "FC(F)F",
    "CCCl", "c1ccoc1", "CCS", "NCCO", "CC(=O)N", "OC(=O)c1ccccc1", "CCCCO", "c1cc[nH]c1",
    "C1CC1", "CCBr", "O=Cc1ccccc1", "CC=O", "NC1CCCCC1",
)  # fmt: skip


def unimol_record(smiles: str, target, num_conformers: int = 2, seed: int = 0) -> dict:
    """A record as Uni-Mol writes it: atoms with hydrogens, `num_conformers` 3D conformers
    of the hydrogen-complete molecule (float32 [n, 3] each)."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    conformers = []
    for k in range(num_conformers):
        assert AllChem.EmbedMolecule(mol, randomSeed=seed + k) == 0, smiles
        conformers.append(mol.GetConformer().GetPositions().astype(np.float32))
    atoms = [atom.GetSymbol() for atom in mol.GetAtoms()]
    return {"atoms": atoms, "coordinates": conformers, "smi": smiles, "target": target}


def write_lmdb(path: str | os.PathLike, values: list) -> None:
    """One LMDB file (subdir=False) with value i (a dict, pickled; bytes as they are) at key
    b"i"."""
    env = lmdb.open(os.fspath(path), subdir=False, map_size=1 << 26, lock=False)
    with env.begin(write=True) as txn:
        for i, value in enumerate(values):
            data = value if isinstance(value, bytes) else pickle.dumps(value, protocol=-1)
            txn.put(str(i).encode("ascii"), data)
    env.close()


def write_unimol_set(directory, parts: dict[str, list]) -> str:
    """DIRECTORY/{train,valid,test}.lmdb from lists of records per part; returns DIRECTORY."""
    os.makedirs(directory, exist_ok=True)
    for part, values in parts.items():
        write_lmdb(os.path.join(directory, f"{part}.lmdb"), values)
    return os.fspath(directory)


def regression_set(directory, sizes=(24, 6, 6), num_conformers: int = 1) -> str:
    """A regression set whose target is a function of the molecule (heavy-atom count)."""
    records = []
    for i in range(sum(sizes)):
        smiles = SMILES[i % len(SMILES)]
        target = [float(Chem.MolFromSmiles(smiles).GetNumAtoms()) / 4.0]
        records.append(unimol_record(smiles, target, num_conformers, seed=i))
    train, valid = sizes[0], sizes[0] + sizes[1]
    parts = {"train": records[:train], "valid": records[train:valid], "test": records[valid:]}
    return write_unimol_set(directory, parts)
