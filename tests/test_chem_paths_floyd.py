"""Path bonds follow the original's Floyd-Warshall tie-breaking (SPEC 1, chem/paths.py).

The reference below is an independent plain-Python transcription of the rule: Floyd-Warshall
over k = 0..N-1 with strict improvement, `mid[i][j]` = the last k that improved (i, j), and
the path expanded recursively i -> mid[i][j] -> j.
"""

import numpy as np
import pytest
from rdkit import Chem

from moleblend_jax.chem.features import mol_to_graph
from moleblend_jax.chem.paths import floyd_warshall, shortest_paths
from moleblend_jax.chem.records import smiles_to_record
from moleblend_jax.data import serialize
from moleblend_jax.schema import MAX_PATH_HOPS, UNREACHABLE_SPD

TIED = {
    "naphthalene": "c1ccc2ccccc2c1",
    "cholesterol": "CC(C)CCCC(C)C1CCC2C1(CCC3C2CC=C4C3(CCC(C4)O)C)C",
    "cubane": "C12C3C4C1C5C2C3C45",
    "cyclotetradecane": "C1CCCCCCCCCCCCC1",
    "cyclododecane": "C1CCCCCCCCCCC1",
    "sodium benzoate": "[Na+].[O-]C(=O)c1ccccc1",
    "chain of 12": "C" * 12,
}


def _reference(n: int, bond_atoms: np.ndarray) -> tuple[list, list]:
    """(hops [N][N], path bonds [N][N][5]) by plain loops, None hops for unreachable pairs."""
    dist = [[0 if i == j else None for j in range(n)] for i in range(n)]
    bond_of = {}
    for b, (u, v) in enumerate(bond_atoms.tolist()):
        dist[u][v] = dist[v][u] = 1
        bond_of[u, v] = bond_of[v, u] = b
    mid = [[None] * n for _ in range(n)]
    for k in range(n):
        for i in range(n):
            for j in range(n):
                if dist[i][k] is None or dist[k][j] is None:
                    continue
                if dist[i][j] is None or dist[i][j] > dist[i][k] + dist[k][j]:
                    dist[i][j] = dist[i][k] + dist[k][j]
                    mid[i][j] = k

    def atoms_between(i, j):
        k = mid[i][j]
        return [] if k is None else atoms_between(i, k) + [k] + atoms_between(k, j)

    bonds = [[[-1] * MAX_PATH_HOPS for _ in range(n)] for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i == j or dist[i][j] is None:
                continue
            atoms = [i, *atoms_between(i, j), j]
            for t, pair in enumerate(zip(atoms[:MAX_PATH_HOPS], atoms[1:], strict=False)):
                bonds[i][j][t] = bond_of[pair]
    return dist, bonds


def _graph(smiles):
    mol = Chem.MolFromSmiles(smiles)
    return mol.GetNumAtoms(), mol_to_graph(mol)["bond_atoms"]


@pytest.mark.parametrize("smiles", TIED.values(), ids=TIED.keys())
def test_path_bonds_equal_reference(smiles):
    n, bond_atoms = _graph(smiles)
    dist, bonds = _reference(n, bond_atoms)
    spd, path_bonds = shortest_paths(n, bond_atoms)
    expected_spd = [[UNREACHABLE_SPD if d is None else d for d in row] for row in dist]
    np.testing.assert_array_equal(spd, expected_spd)
    np.testing.assert_array_equal(path_bonds, bonds)


def test_molecules_have_ties_and_long_paths():
    """Cholesterol has pairs with several shortest paths and paths past MAX_PATH_HOPS."""
    n, bond_atoms = _graph(TIED["cholesterol"])
    spd, _ = floyd_warshall(n, bond_atoms)
    assert spd.max() > MAX_PATH_HOPS
    # Tied pairs: more than one neighbour of i one hop closer to j.
    closer = (spd[None, :, :] == spd[:, None, :] - 1) & (spd == 1)[:, :, None]
    assert (closer.sum(axis=1) > 1).any()


@pytest.mark.parametrize("smiles", TIED.values(), ids=TIED.keys())
def test_serialize_round_trip_keeps_path_bonds(smiles):
    record = smiles_to_record(smiles, 7)
    decoded = serialize.decode_record(serialize.encode_record(record))
    np.testing.assert_array_equal(decoded["path_bonds"], record["path_bonds"])
    np.testing.assert_array_equal(decoded["spd"], record["spd"])


def test_256_atoms_give_shortest_paths():
    """The shard format's largest molecule: a ring of 41 rings, paths of up to ~90 hops."""
    n, bond_atoms = _graph("C1CC" + "C2CCCC(C2)" * 41 + "CCCCCCC1")
    assert n == 256
    spd, path_bonds = shortest_paths(n, bond_atoms)
    assert MAX_PATH_HOPS < spd.max() < UNREACHABLE_SPD
    hops = np.minimum(spd, MAX_PATH_HOPS)
    step = np.arange(MAX_PATH_HOPS)
    np.testing.assert_array_equal(path_bonds >= 0, step < hops[..., None])
    # Walk the bonds from i: each one must leave the current atom and get one hop closer to j.
    current = np.broadcast_to(np.arange(n)[:, None], (n, n))
    target = np.broadcast_to(np.arange(n), (n, n))
    for t in range(MAX_PATH_HOPS):
        on_path = hops > t
        ends = bond_atoms[path_bonds[..., t][on_path]]
        here = current[on_path]
        assert ((ends[:, 0] == here) | (ends[:, 1] == here)).all()
        after = np.where(ends[:, 0] == here, ends[:, 1], ends[:, 0])
        np.testing.assert_array_equal(spd[after, target[on_path]], spd[on_path] - t - 1)
        current = current.copy()
        current[on_path] = after
