"""Shortest paths and path bonds (SPEC 1) against RDKit and a brute-force check."""

import numpy as np
import pytest
from rdkit import Chem

from moleblend_jax.chem.features import mol_to_graph
from moleblend_jax.chem.paths import shortest_paths
from moleblend_jax.schema import MAX_PATH_HOPS, UNREACHABLE_SPD

SMILES = [
    "CC(=O)Oc1ccccc1C(=O)O",
    "CC(=O)[O-].[Na+]",
    "C",
    "c1ccccc1.CCO.[Cl-]",
    "C1CCC2(CC1)CCCC2",
    "C1CCCCCCCCCCCCCCCCCC1",  # Ring with many tied shortest paths.
    "C12C3C4C1C5C2C3C45",  # Cubane.
    "C" * 80,  # Paths of up to 79 hops.
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
]


def _check(smiles):
    mol = Chem.MolFromSmiles(smiles)
    g = mol_to_graph(mol)
    n = mol.GetNumAtoms()
    spd, path_bonds = shortest_paths(n, g["bond_atoms"])
    assert spd.dtype == np.int32 and path_bonds.dtype == np.int32
    assert path_bonds.shape == (n, n, MAX_PATH_HOPS)
    expected = Chem.GetDistanceMatrix(mol)
    expected = np.where(expected > 1e6, UNREACHABLE_SPD, expected).astype(np.int32)
    np.testing.assert_array_equal(spd, expected)
    ends = g["bond_atoms"]
    for i in range(n):
        for j in range(n):
            hops = 0 if spd[i, j] == UNREACHABLE_SPD else spd[i, j]
            listed = path_bonds[i, j]
            count = min(hops, MAX_PATH_HOPS)
            assert (listed[count:] == -1).all(), (i, j)
            atom = i
            for k in range(count):
                bond = listed[k]
                assert bond >= 0
                u, v = ends[bond]
                assert atom in (u, v), "consecutive bonds must be connected"
                atom = v if atom == u else u
                # Each step gets one hop closer to j: the path is a shortest path.
                assert spd[atom, j] == hops - k - 1
            if 0 < hops <= MAX_PATH_HOPS:
                assert atom == j
    return spd, path_bonds, g


@pytest.mark.parametrize("smiles", SMILES)
def test_paths_are_shortest(smiles):
    _check(smiles)


def test_single_atom_and_no_bonds():
    spd, pb = shortest_paths(1, np.zeros((0, 2), np.int32))
    assert spd.tolist() == [[0]] and (pb == -1).all()
    spd, pb = shortest_paths(3, np.zeros((0, 2), np.int32))
    assert (spd[~np.eye(3, dtype=bool)] == UNREACHABLE_SPD).all() and (pb == -1).all()
