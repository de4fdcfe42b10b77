"""Shortest-path hop counts and multi-hop path bonds on the heavy-atom graph (SPEC 1).

All shortest paths towards one target atom j follow one BFS tree rooted at j, so the path
i -> j continues as the path a -> j from its second atom a. That makes the whole [N, N, 5]
path-bond tensor recoverable from the [N, N] next-hop matrix, which is what shards store
(docs/data.md).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path

from moleblend_jax.schema import MAX_PATH_HOPS, UNREACHABLE_SPD


def bond_index_matrix(num_atoms: int, bond_atoms: np.ndarray) -> np.ndarray:
    """[E, 2] bond ends -> [N, N] int32 bond index of each bonded pair, -1 elsewhere."""
    index = np.full((num_atoms, num_atoms), -1, np.int32)
    ids = np.arange(len(bond_atoms), dtype=np.int32)
    index[bond_atoms[:, 0], bond_atoms[:, 1]] = ids
    index[bond_atoms[:, 1], bond_atoms[:, 0]] = ids
    return index


# Above this many atoms BFS runs in scipy (C); below, dense numpy is faster than scipy's set-up.
_DENSE_MAX_ATOMS = 64


def _dense_spd(adjacency: np.ndarray) -> np.ndarray:
    """[N, N] bool adjacency -> [N, N] int32 hop counts by level-synchronous BFS from all atoms."""
    n = len(adjacency)
    spd = np.full((n, n), UNREACHABLE_SPD, np.int32)
    np.fill_diagonal(spd, 0)
    reached = np.eye(n, dtype=bool)
    frontier = reached.astype(np.float32)
    step = adjacency.astype(np.float32)
    for hops in range(1, n):
        frontier = ((frontier @ step) > 0) & ~reached
        if not frontier.any():
            break
        spd[frontier] = hops
        reached |= frontier
        frontier = frontier.astype(np.float32)
    return spd


def shortest_path_tree(
    num_atoms: int, bond_atoms: np.ndarray, spd: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """BFS from every atom (or `spd` given, e.g. from RDKit's `Chem.GetDistanceMatrix`).

    Returns (spd [N, N] int32, next_hop [N, N] int32): next_hop[i, j] is the atom after i on the
    chosen shortest path i -> j (the lowest-index neighbour of i one hop closer to j), and i on
    the diagonal and for unreachable pairs. spd is UNREACHABLE_SPD for disconnected pairs.
    """
    n = int(num_atoms)
    bond_atoms = np.asarray(bond_atoms, np.int32).reshape(-1, 2)
    rows = np.arange(n, dtype=np.int32)
    adjacency = np.zeros((n, n), bool)
    adjacency[bond_atoms[:, 0], bond_atoms[:, 1]] = True
    adjacency[bond_atoms[:, 1], bond_atoms[:, 0]] = True
    if spd is not None:
        spd = np.where(spd > n, UNREACHABLE_SPD, spd).astype(np.int32)
    elif n <= _DENSE_MAX_ATOMS:
        spd = _dense_spd(adjacency)
    else:
        dist = shortest_path(csr_matrix(adjacency), directed=False, unweighted=True)
        spd = np.where(np.isfinite(dist), dist, UNREACHABLE_SPD).astype(np.int32)
    # candidate[i, a, j]: a is a neighbour of i one hop closer to j. Every candidate gives a
    # shortest path; taking a fixed choice per (current atom, target) makes the paths towards
    # one target a tree, so path bonds can be rebuilt from next hops alone.
    closer = spd[None, :, :] == (spd[:, None, :] - 1)
    candidate = adjacency[:, :, None] & closer
    has_next = candidate.any(axis=1) & (spd != UNREACHABLE_SPD)
    next_hop = np.where(has_next, candidate.argmax(axis=1), rows[:, None]).astype(np.int32)
    return spd, next_hop


def path_bonds_from_next_hop(
    spd: np.ndarray, next_hop: np.ndarray, bond_atoms: np.ndarray
) -> np.ndarray:
    """[N, N] spd + [N, N] next hops -> [N, N, MAX_PATH_HOPS] int32 bond ids, -1 past the path."""
    n = spd.shape[0]
    bond_index = bond_index_matrix(n, np.asarray(bond_atoms, np.int32).reshape(-1, 2))
    hops = np.where(spd == UNREACHABLE_SPD, 0, spd)
    current = np.broadcast_to(np.arange(n)[:, None], (n, n))
    target = np.broadcast_to(np.arange(n)[None, :], (n, n))
    path_bonds = np.full((n, n, MAX_PATH_HOPS), -1, np.int32)
    for k in range(MAX_PATH_HOPS):
        on_path = hops > k
        if not on_path.any():
            break
        step = next_hop[current, target]
        path_bonds[..., k] = np.where(on_path, bond_index[current, step], -1)
        current = np.where(on_path, step, current)
    return path_bonds


def next_hop_from_path_bonds(path_bonds: np.ndarray, bond_atoms: np.ndarray) -> np.ndarray:
    """Inverse of `path_bonds_from_next_hop` for paths built by `shortest_path_tree`.

    [N, N, 5] path bonds -> [N, N] int32 next hops (i where there is no first bond).
    """
    n = path_bonds.shape[0]
    bond_atoms = np.asarray(bond_atoms, np.int32).reshape(-1, 2)
    rows = np.broadcast_to(np.arange(n, dtype=np.int32)[:, None], (n, n))
    first = path_bonds[..., 0]
    if len(bond_atoms) == 0:
        return rows.copy()
    ends = bond_atoms[np.maximum(first, 0)]  # [N, N, 2]
    other = np.where(ends[..., 0] == rows, ends[..., 1], ends[..., 0])
    return np.where(first >= 0, other, rows).astype(np.int32)


def shortest_paths(num_atoms: int, bond_atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (spd [N, N] int32, path_bonds [N, N, MAX_PATH_HOPS] int32).

    spd: hop count, 0 on the diagonal, UNREACHABLE_SPD between fragments. path_bonds[i, j, k]:
    index into `bond_atoms` of the k-th bond of one shortest path i -> j, -1 where the path has
    fewer than k + 1 bonds (diagonal and unreachable pairs are all -1).
    """
    spd, next_hop = shortest_path_tree(num_atoms, bond_atoms)
    return spd, path_bonds_from_next_hop(spd, next_hop, bond_atoms)
