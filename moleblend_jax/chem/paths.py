"""Shortest-path hop counts and multi-hop path bonds on the heavy-atom graph (SPEC 1).

Where several shortest paths tie, the path is the one the original's data path picks
(YudiZh/MoleBlend, commit b180f1a):

- `algos.pyx` `floyd_warshall` (lines 12-57): unreachable pairs start at 510 (lines 29-35);
  k runs over the vertex order 0..N-1 (line 38); an update needs a strict improvement
  `M_ij > M_ik + M_kj` and records `path[i][j] = k` (lines 46-48), so `path[i][j]` is the last
  k that improved (i, j). `path` starts at 0 (line 21), and pairs still at >= 510 get
  `path = 510` (lines 50-55).
- `MoleBlend/data/wrapper.py` `preprocess_item` (lines 439-443) then sets `path[adj] = -1`:
  -1 means "no intermediate" for bonded pairs; the diagonal keeps 0 but is never expanded.
- `algos.pyx` `get_all_edges` (lines 156-161) expands i -> path[i][j] -> j recursively,
  stopping at -1; `gen_edge_input` (lines 164-190) skips i == j and path == 510 pairs (all -1)
  and lists the bonds from i; the collator keeps the first `multi_hop_max_dist` = 5
  (`MoleBlend/data/collator.py` line 79, `MoleBlend/data/dataset.py` line 108).

Here `via` [N, N] holds that intermediate atom, with i itself where there is none (bonded,
diagonal and unreachable pairs; hop counts tell them apart). Shards store `via` and expand it
on reading (docs/data.md).
"""

from __future__ import annotations

import numpy as np

from moleblend_jax.schema import MAX_PATH_HOPS, UNREACHABLE_SPD


def bond_index_matrix(num_atoms: int, bond_atoms: np.ndarray) -> np.ndarray:
    """[E, 2] bond ends -> [N, N] int32 bond index of each bonded pair, -1 elsewhere."""
    index = np.full((num_atoms, num_atoms), -1, np.int32)
    ids = np.arange(len(bond_atoms), dtype=np.int32)
    index[bond_atoms[:, 0], bond_atoms[:, 1]] = ids
    index[bond_atoms[:, 1], bond_atoms[:, 0]] = ids
    return index


def floyd_warshall(num_atoms: int, bond_atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The original's Floyd-Warshall on the bond graph (module docstring).

    Returns (spd [N, N] int32 hop counts, UNREACHABLE_SPD between fragments; via [N, N] int32:
    the last k that strictly improved (i, j), i where no k did). One step per k on whole
    [N, N] arrays gives the same result as the original's in-place i, j loops, because step k
    cannot change row k or column k (M[k][k] = 0).
    """
    n = int(num_atoms)
    bond_atoms = np.asarray(bond_atoms, np.int32).reshape(-1, 2)
    spd = np.full((n, n), UNREACHABLE_SPD, np.int32)
    spd[bond_atoms[:, 0], bond_atoms[:, 1]] = 1
    spd[bond_atoms[:, 1], bond_atoms[:, 0]] = 1
    spd.flat[:: n + 1] = 0
    via = np.arange(n, dtype=np.int32)[:, None].repeat(n, axis=1)
    degree = np.bincount(bond_atoms.ravel(), minlength=n)
    # An atom with one bond lies on no shortest path between two others: its step changes
    # nothing, so skipping it is exact (and saves ~1/3 of the steps on QM9).
    for k in np.nonzero(degree > 1)[0].tolist():
        through = spd[:, k, None] + spd[k]
        better = through < spd
        np.copyto(spd, through, where=better)
        via[better] = k
    return spd, via


def path_bonds_from_via(spd: np.ndarray, via: np.ndarray, bond_atoms: np.ndarray) -> np.ndarray:
    """[N, N] spd + [N, N] via -> [N, N, MAX_PATH_HOPS] int32 bond ids, -1 past the path.

    Bond t of path (i, j) with k = via[i, j] and d = spd[i, k] is bond t of (i, k) if t < d,
    else bond t - d of (k, j); a bonded pair's bond 0 is its bond. That recursion is a pointer
    per state (i, j, t), and each step shortens the pair, so doubling the pointers
    log2(longest hop count) times reaches every answer. `data.batch_decoder._path_bond_codes` does
    the same in TF.
    """
    n = spd.shape[0]
    bond_index = bond_index_matrix(n, np.asarray(bond_atoms, np.int32).reshape(-1, 2))
    hops = np.where(spd == UNREACHABLE_SPD, 0, spd)
    rows = np.arange(n)[:, None]
    step = np.arange(MAX_PATH_HOPS)
    first = hops[rows, via][..., None]  # [N, N, 1] hops of the part i -> via.
    left = (rows * n + via)[..., None] * MAX_PATH_HOPS + step
    right = (via * n + np.arange(n))[..., None] * MAX_PATH_HOPS + step - first
    state = np.arange(n * n * MAX_PATH_HOPS).reshape(n, n, MAX_PATH_HOPS)
    done = (step >= hops[..., None]) | (hops[..., None] == 1)
    pointer = np.where(done, state, np.where(step < first, left, right)).ravel()
    span = 1  # Recursion steps that `pointer` takes at once.
    while span < hops.max(initial=0) - 1:
        pointer, span = pointer[pointer], 2 * span
    answer = np.where(step < hops[..., None], bond_index[..., None], -1).ravel()
    return answer[pointer].reshape(n, n, MAX_PATH_HOPS).astype(np.int32)


def shortest_paths(num_atoms: int, bond_atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Returns (spd [N, N] int32, path_bonds [N, N, MAX_PATH_HOPS] int32).

    spd: hop count, 0 on the diagonal, UNREACHABLE_SPD between fragments. path_bonds[i, j, k]:
    index into `bond_atoms` of the k-th bond of the original's shortest path i -> j, -1 where
    the path has fewer than k + 1 bonds (diagonal and unreachable pairs are all -1).
    """
    spd, via = floyd_warshall(num_atoms, bond_atoms)
    return spd, path_bonds_from_via(spd, via, bond_atoms)
