"""Synthetic padded molecule batches (numpy, from a seed) shaped like MoleBLEND's inputs.

Each molecule is a random tree of heavy atoms (max 4 bonds per atom) plus 0-2 ring closures; one in
ten has a detached second fragment (so 'unreachable' pairs occur). Coordinates follow the bonds at
1.5 Angstrom. Feature values stay inside OGB's vocabularies.
"""

from collections import deque

import numpy as np

UNREACHABLE = 510


def _molecule(rng, n, hops):
    frag = (
        n - rng.integers(1, 4) if (n > 4 and rng.random() < 0.1) else n
    )  # atoms >= frag: fragment 2
    nbrs = [[] for _ in range(n)]
    bond = {}
    pos = np.zeros((n, 3))

    def add(i, j):
        f = (
            rng.choice(4, p=[0.7, 0.15, 0.03, 0.12]),
            rng.choice(3, p=[0.94, 0.03, 0.03]),
            rng.integers(2),
        )
        bond[i, j] = bond[j, i] = f
        nbrs[i].append(j)
        nbrs[j].append(i)

    for k in range(1, n):
        root = 0 if k < frag else frag
        if k == frag:
            pos[k] = pos[0] + rng.normal(size=3) * 5.0
            continue
        cands = [a for a in range(root, k) if len(nbrs[a]) < 4]
        p = rng.choice(cands)
        add(p, k)
        v = rng.normal(size=3)
        pos[k] = pos[p] + 1.5 * v / np.linalg.norm(v)
    for _ in range(rng.integers(3)):  # ring closures
        i, j = rng.choice(frag, 2, replace=False) if frag > 2 else (0, 0)
        if i != j and (i, j) not in bond and len(nbrs[i]) < 4 and len(nbrs[j]) < 4:
            add(i, j)

    spd = np.full((n, n), UNREACHABLE, np.int64)
    path = np.full((n, n, hops, 3), -1, np.int64)
    for s in range(n):  # BFS with parents
        parent = {s: None}
        q = deque([s])
        while q:
            a = q.popleft()
            for b in nbrs[a]:
                if b not in parent:
                    parent[b] = a
                    q.append(b)
        for t in parent:
            nodes = [t]
            while parent[nodes[-1]] is not None:
                nodes.append(parent[nodes[-1]])
            nodes = nodes[::-1]  # s ... t
            spd[s, t] = len(nodes) - 1
            for k, (a, b) in enumerate(zip(nodes[:-1], nodes[1 : hops + 1], strict=False)):
                path[s, t, k] = bond[a, b]

    deg = np.array([len(x) for x in nbrs])
    atom = np.stack(
        [
            rng.choice(
                [5, 6, 7, 8, 15, 16], n, p=[0.7, 0.12, 0.12, 0.02, 0.02, 0.02]
            ),  # atomic number - 1
            rng.choice(3, n, p=[0.9, 0.05, 0.05]),  # chirality
            deg,  # degree
            np.full(n, 5),  # formal charge 0
            np.clip(4 - deg, 0, 3),  # num H
            np.zeros(n, np.int64),  # radical electrons
            rng.choice([1, 2, 3], n),  # hybridisation
            rng.integers(2, size=n),
            rng.integers(2, size=n),  # aromatic, in ring
        ],
        -1,
    )
    return atom, spd, path, pos - pos.mean(0)


def make_batch(seed=0, batch=32, atoms=32, min_atoms=9, max_atoms=30, hops=5):
    """Padded numpy batch: atom [B,N,9], spd [B,N,N], path [B,N,N,hops,3], pos [B,N,3], mask [B,N]."""
    rng = np.random.default_rng(seed)
    max_atoms = min(max_atoms, atoms)
    out = {
        "atom": np.zeros((batch, atoms, 9), np.int64),
        "spd": np.zeros((batch, atoms, atoms), np.int64),
        "path": np.full((batch, atoms, atoms, hops, 3), -1, np.int64),
        "pos": np.zeros((batch, atoms, 3), np.float32),
        "mask": np.zeros((batch, atoms), bool),
    }
    for b in range(batch):
        n = int(rng.integers(min_atoms, max_atoms + 1))
        atom, spd, path, pos = _molecule(rng, n, hops)
        out["atom"][b, :n], out["spd"][b, :n, :n], out["path"][b, :n, :n] = atom, spd, path
        out["pos"][b, :n], out["mask"][b, :n] = pos, True
    return out
