"""OGB-compatible atom and bond featurisation (SPEC 1).

Reimplements `ogb.utils.features.atom_to_feature_vector` / `bond_to_feature_vector` and
`ogb.utils.smiles2graph` (ogb is not a dependency) with one deliberate difference: a chirality
tag outside OGB's list (e.g. RDKit's CHI_ALLENE) maps to the `misc` slot, where OGB raises.
Ids are raw (unshifted); batches shift them by +1 (docs/batch_format.md).
"""

from __future__ import annotations

import numpy as np
from rdkit import Chem

from moleblend_jax.schema import NUM_ATOM_FEATURES, NUM_BOND_FEATURES

# The lists of ogb.utils.features.allowable_features, in OGB's order.
ALLOWABLE_FEATURES = {
    "possible_atomic_num_list": list(range(1, 119)) + ["misc"],
    "possible_chirality_list": [
        "CHI_UNSPECIFIED",
        "CHI_TETRAHEDRAL_CW",
        "CHI_TETRAHEDRAL_CCW",
        "CHI_OTHER",
        "misc",
    ],
    "possible_degree_list": list(range(11)) + ["misc"],
    "possible_formal_charge_list": list(range(-5, 6)) + ["misc"],
    "possible_numH_list": list(range(9)) + ["misc"],
    "possible_number_radical_e_list": list(range(5)) + ["misc"],
    "possible_hybridization_list": ["SP", "SP2", "SP3", "SP3D", "SP3D2", "misc"],
    "possible_is_aromatic_list": [False, True],
    "possible_is_in_ring_list": [False, True],
    "possible_bond_type_list": ["SINGLE", "DOUBLE", "TRIPLE", "AROMATIC", "misc"],
    "possible_bond_stereo_list": [
        "STEREONONE",
        "STEREOZ",
        "STEREOE",
        "STEREOCIS",
        "STEREOTRANS",
        "STEREOANY",
    ],
    "possible_is_conjugated_list": [False, True],
}


def safe_index(values: list, value) -> int:
    """Index of `value` in `values`, or the last (`misc`) index when absent (as OGB)."""
    try:
        return values.index(value)
    except ValueError:
        return len(values) - 1


def _lookup(name: str) -> dict:
    """{value: id} for one OGB list (fast path for `safe_index`)."""
    return {v: i for i, v in enumerate(ALLOWABLE_FEATURES[name]) if v != "misc"}


_ATOMIC_NUM = _lookup("possible_atomic_num_list")
_CHIRALITY = _lookup("possible_chirality_list")
_DEGREE = _lookup("possible_degree_list")
_CHARGE = _lookup("possible_formal_charge_list")
_NUM_H = _lookup("possible_numH_list")
_RADICAL = _lookup("possible_number_radical_e_list")
_HYBRIDIZATION = _lookup("possible_hybridization_list")
_BOND_TYPE = _lookup("possible_bond_type_list")
_BOND_STEREO = _lookup("possible_bond_stereo_list")
# Misc ids (last slot of each list).
_MISC = {n: len(v) - 1 for n, v in ALLOWABLE_FEATURES.items()}


def atom_to_feature_vector(atom: Chem.Atom) -> list[int]:
    """The 9 OGB atom ids of one RDKit atom."""
    return [
        _ATOMIC_NUM.get(atom.GetAtomicNum(), _MISC["possible_atomic_num_list"]),
        _CHIRALITY.get(str(atom.GetChiralTag()), _MISC["possible_chirality_list"]),
        _DEGREE.get(atom.GetTotalDegree(), _MISC["possible_degree_list"]),
        _CHARGE.get(atom.GetFormalCharge(), _MISC["possible_formal_charge_list"]),
        _NUM_H.get(atom.GetTotalNumHs(), _MISC["possible_numH_list"]),
        _RADICAL.get(atom.GetNumRadicalElectrons(), _MISC["possible_number_radical_e_list"]),
        _HYBRIDIZATION.get(str(atom.GetHybridization()), _MISC["possible_hybridization_list"]),
        int(atom.GetIsAromatic()),
        int(atom.IsInRing()),
    ]


def bond_to_feature_vector(bond: Chem.Bond) -> list[int]:
    """The 3 OGB bond ids of one RDKit bond."""
    return [
        _BOND_TYPE.get(str(bond.GetBondType()), _MISC["possible_bond_type_list"]),
        # OGB has no misc slot for stereo; every RDKit BondStereo value is in the list.
        _BOND_STEREO.get(str(bond.GetStereo()), len(_BOND_STEREO) - 1),
        int(bond.GetIsConjugated()),
    ]


def mol_to_graph(mol: Chem.Mol) -> dict[str, np.ndarray]:
    """RDKit mol (heavy atoms; no explicit H) -> OGB graph arrays in RDKit atom/bond order.

    Returns dict(atom_features [N, 9] int32, bond_features [E, 3] int32, bond_atoms [E, 2] int32)
    with one row per bond (OGB's `smiles2graph` stores both directions; we store each bond once).
    """
    # Index loops: RDKit's GetAtoms()/GetBonds() sequence wrappers are slow in Python.
    atoms = [atom_to_feature_vector(mol.GetAtomWithIdx(i)) for i in range(mol.GetNumAtoms())]
    bonds = [mol.GetBondWithIdx(i) for i in range(mol.GetNumBonds())]
    bond_features = [bond_to_feature_vector(b) for b in bonds]
    bond_atoms = [(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in bonds]
    return dict(
        atom_features=np.asarray(atoms, np.int32).reshape(-1, NUM_ATOM_FEATURES),
        bond_features=np.asarray(bond_features, np.int32).reshape(-1, NUM_BOND_FEATURES),
        bond_atoms=np.asarray(bond_atoms, np.int32).reshape(-1, 2),
    )


def smiles2graph(smiles: str) -> dict[str, np.ndarray]:
    """OGB's `smiles2graph` layout: edge_index [2, 2E] both directions, edge_feat [2E, 3],
    node_feat [N, 9], num_nodes. For comparison with OGB-based code."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"Invalid SMILES {smiles!r}")
    graph = mol_to_graph(mol)
    ends = graph["bond_atoms"]
    edge_index = np.stack([ends, ends[:, ::-1]], axis=1).reshape(-1, 2).T
    return dict(
        edge_index=edge_index.astype(np.int64),
        edge_feat=np.repeat(graph["bond_features"], 2, axis=0).astype(np.int64),
        node_feat=graph["atom_features"].astype(np.int64),
        num_nodes=len(graph["atom_features"]),
    )
