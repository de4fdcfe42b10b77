"""Shared helpers for the model and loss tests: hand-made molecules -> padded batches.

Batches follow docs/batch_format.md (shifted ids, 0 = padding). Shortest paths come from a small
BFS here so the tests do not depend on moleblend_jax.chem / moleblend_jax.data.
"""

import collections
import dataclasses

import flax.linen as nn
import numpy as np

from moleblend_jax.configs import base
from moleblend_jax.model import MoleBlendEncoder
from moleblend_jax.model.config import ModelConfig

UNREACHABLE_SPD = 510


@dataclasses.dataclass
class Molecule:
    """Raw (unshifted) OGB-style features of one heavy-atom graph."""

    atom_features: np.ndarray  # [n, 9] int
    bonds: list  # [(i, j, (bond_type, stereo, conjugated))]
    coords: np.ndarray  # [n, 3] float


def _atoms(atomic_ids):
    """Plausible raw atom feature rows for the given atomic-number ids."""
    n = len(atomic_ids)
    feats = np.zeros((n, 9), np.int32)
    feats[:, 0] = atomic_ids
    feats[:, 2] = 2  # degree
    feats[:, 4] = 1  # num H
    feats[:, 6] = 3  # hybridization
    return feats


def chain3() -> Molecule:
    """C-C-O chain (two single bonds, one conjugated)."""
    return Molecule(
        _atoms([5, 5, 7]),
        [(0, 1, (0, 0, 0)), (1, 2, (1, 0, 1))],
        np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [2.1, 1.2, 0.1]], np.float32),
    )


def ring5() -> Molecule:
    """Five-membered aromatic ring with one N."""
    angles = np.arange(5) * 2 * np.pi / 5
    coords = np.stack([1.2 * np.cos(angles), 1.2 * np.sin(angles), 0.05 * np.arange(5)], -1)
    bonds = [(i, (i + 1) % 5, (3, 0, 1)) for i in range(5)]
    bonds[2] = (2, 3, (1, 2, 1))  # one double bond with E stereo
    return Molecule(_atoms([5, 5, 6, 5, 5]), bonds, coords.astype(np.float32))


def two_fragments() -> Molecule:
    """C-C plus a separate N-C-O fragment (unreachable pairs)."""
    return Molecule(
        _atoms([5, 5, 6, 5, 7]),
        [(0, 1, (0, 0, 0)), (2, 3, (0, 0, 0)), (3, 4, (1, 0, 1))],
        np.array([[0, 0, 0], [1.5, 0, 0], [4, 4, 0], [5.2, 4.5, 0.3], [6.0, 5.5, 0.0]], np.float32),
    )


def long_chain(n: int = 13) -> Molecule:
    """Linear chain of n carbons: SPD up to n-1 hops (11+ hops class), 5-hop path truncation."""
    coords = np.stack([1.4 * np.arange(n), 0.3 * (np.arange(n) % 2), np.zeros(n)], -1)
    bonds = [(i, i + 1, (0, 0, i % 2)) for i in range(n - 1)]
    return Molecule(_atoms([5] * n), bonds, coords.astype(np.float32))


def single_atom() -> Molecule:
    return Molecule(_atoms([7]), [], np.zeros((1, 3), np.float32))


def coincident() -> Molecule:
    """Two bonded atoms at the same position (degenerate geometry)."""
    return Molecule(_atoms([5, 6]), [(0, 1, (0, 0, 0))], np.zeros((2, 3), np.float32))


def default_molecules() -> list:
    return [chain3(), ring5(), two_fragments()]


def shortest_paths(mol: Molecule, max_hops: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """-> ([n, n] hops with UNREACHABLE_SPD, [n, n, max_hops] bond index or -1) by BFS."""
    n = len(mol.atom_features)
    adjacency = collections.defaultdict(list)
    for b, (i, j, _) in enumerate(mol.bonds):
        adjacency[i].append((j, b))
        adjacency[j].append((i, b))
    spd = np.full((n, n), UNREACHABLE_SPD, np.int32)
    paths = np.full((n, n, max_hops), -1, np.int32)
    for src in range(n):
        spd[src, src] = 0
        parent = {src: None}
        queue = collections.deque([src])
        while queue:
            u = queue.popleft()
            for v, b in sorted(adjacency[u]):
                if v not in parent:
                    parent[v] = (u, b)
                    spd[src, v] = spd[src, u] + 1
                    queue.append(v)
        for dst in parent:
            bonds_on_path = []
            node = dst
            while parent[node] is not None:
                node, b = parent[node]
                bonds_on_path.append(b)
            bonds_on_path.reverse()
            for k, b in enumerate(bonds_on_path[:max_hops]):
                paths[src, dst, k] = b
    return spd, paths


def make_batch(molecules, num_atoms: int | None = None, num_molecules: int | None = None) -> dict:
    """Hand-made molecules -> padded batch dict of numpy arrays (docs/batch_format.md)."""
    num_atoms = num_atoms or max(len(m.atom_features) for m in molecules)
    num_molecules = num_molecules or len(molecules)
    b, n = num_molecules, num_atoms
    batch = {
        "atom_features": np.zeros((b, n, 9), np.int32),
        "atom_mask": np.zeros((b, n), bool),
        "spd": np.zeros((b, n, n), np.int32),
        "path_edges": np.zeros((b, n, n, 5, 3), np.int32),
        "coords": np.zeros((b, n, 3), np.float32),
        "mol_mask": np.zeros((b,), bool),
        "id": np.full((b,), -1, np.int64),
    }
    for m_idx, mol in enumerate(molecules):
        k = len(mol.atom_features)
        spd, paths = shortest_paths(mol)
        bond_feats = np.array([f for _, _, f in mol.bonds], np.int32).reshape(-1, 3)
        batch["atom_features"][m_idx, :k] = mol.atom_features + 1
        batch["atom_mask"][m_idx, :k] = True
        batch["spd"][m_idx, :k, :k] = spd + 1
        shifted_bonds = bond_feats[np.maximum(paths, 0)] + 1 if len(bond_feats) else 0
        path_feats = np.where((paths >= 0)[..., None], shifted_bonds, 0)
        batch["path_edges"][m_idx, :k, :k] = path_feats
        batch["coords"][m_idx, :k] = mol.coords
        batch["mol_mask"][m_idx] = True
        batch["id"][m_idx] = m_idx
    return batch


def small_model_config(**overrides):
    """CPU-test-sized config.model (2 layers, hidden 32, 4 heads, K 16), fp32."""
    m = base.model_config()
    m.num_layers = 2
    m.hidden_dim = 32
    m.ffn_dim = 32
    m.num_heads = 4
    m.num_kernels = 16
    m.dtype = "float32"
    m.atom_vocab_size = 128
    m.num_degree_ids = 16
    for key, value in overrides.items():
        setattr(m, key, value)
    return m


def small_config(**overrides) -> ModelConfig:
    """small_model_config as the ModelConfig that the model's sub-modules take."""
    return ModelConfig.from_config(small_model_config(**overrides))


def loss_weights():
    return base.get_config().loss_weights


# --------------------------------------------------------------------------------------------
# Params without an init compile (random values are fine for formula tests).


def random_params(module, *args, seed: int = 0, scale: float = 0.3, **kwargs) -> dict:
    """Random float32 params with the module's tree (via jax.eval_shape, no real init)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    shapes = jax.eval_shape(lambda: module.init({"params": jax.random.key(0)}, *args, **kwargs))[
        "params"
    ]
    shapes = nn.unbox(shapes)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        values = rng.normal(0.0, scale, leaf.shape)
        if getattr(path[-1], "key", None) == "scale":
            values = 1.0 + values
        return jnp.asarray(values, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def assert_close_fp32(actual, desired, tol: float = 1e-5):
    """fp32 vs float64 reference: |a - d| <= tol * max(1, max |d|) elementwise."""
    desired = np.asarray(desired, np.float64)
    scale = max(1.0, float(np.abs(desired).max()) if desired.size else 1.0)
    np.testing.assert_allclose(np.asarray(actual, np.float64), desired, rtol=0, atol=tol * scale)


def rotation_matrix(seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


class Backbone(nn.Module):
    """A fine-tuning backbone: the encoder of one modality under the name "encoder"."""

    config: object
    use_2d: bool = True
    use_3d: bool = True

    @nn.compact
    def __call__(self, batch):
        encoder = MoleBlendEncoder(self.config, self.use_2d, self.use_3d, name="encoder")
        graph_repr, atom_repr, _ = encoder(batch)
        return {"graph_repr": graph_repr, "atom_repr": atom_repr}


MODALITIES = {"2d": dict(use_2d=True, use_3d=False), "3d": dict(use_2d=False, use_3d=True)}
