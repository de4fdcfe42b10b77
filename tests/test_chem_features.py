"""OGB featurisation (SPEC 1): hand-checked values and a literal transcription of OGB's code."""

import numpy as np
import pytest
from rdkit import Chem

from moleblend_jax.chem.features import ALLOWABLE_FEATURES, mol_to_graph, smiles2graph
from moleblend_jax.schema import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS

SMILES = [
    "CC(=O)Oc1ccccc1C(=O)O",
    "CC(=O)[O-].[Na+]",
    "[Na+].[Cl-]",
    "C[N+](=O)[O-]",
    "C",
    "[13CH3]O",
    "F/C=C/F",
    "C/C=C\\C",
    "N[C@@H](C)C(=O)O",
    "[Cu+2].[O-]S(=O)(=O)[O-]",
    "[CH3]",
    "c1ccc2[nH]ccc2c1",
    "[Fe]",
    "*C",
    "O=[U](=O)=O",
]


def _ogb_safe_index(values, value):
    try:
        return values.index(value)
    except ValueError:
        return len(values) - 1


def _ogb_atom(atom):
    """ogb.utils.features.atom_to_feature_vector, transcribed."""
    f = ALLOWABLE_FEATURES
    return [
        _ogb_safe_index(f["possible_atomic_num_list"], atom.GetAtomicNum()),
        f["possible_chirality_list"].index(str(atom.GetChiralTag())),
        _ogb_safe_index(f["possible_degree_list"], atom.GetTotalDegree()),
        _ogb_safe_index(f["possible_formal_charge_list"], atom.GetFormalCharge()),
        _ogb_safe_index(f["possible_numH_list"], atom.GetTotalNumHs()),
        _ogb_safe_index(f["possible_number_radical_e_list"], atom.GetNumRadicalElectrons()),
        _ogb_safe_index(f["possible_hybridization_list"], str(atom.GetHybridization())),
        f["possible_is_aromatic_list"].index(atom.GetIsAromatic()),
        f["possible_is_in_ring_list"].index(atom.IsInRing()),
    ]


def _ogb_bond(bond):
    f = ALLOWABLE_FEATURES
    return [
        _ogb_safe_index(f["possible_bond_type_list"], str(bond.GetBondType())),
        f["possible_bond_stereo_list"].index(str(bond.GetStereo())),
        f["possible_is_conjugated_list"].index(bond.GetIsConjugated()),
    ]


@pytest.mark.parametrize("smiles", SMILES)
def test_matches_ogb_transcription(smiles):
    mol = Chem.MolFromSmiles(smiles)
    graph = mol_to_graph(mol)
    np.testing.assert_array_equal(graph["atom_features"], [_ogb_atom(a) for a in mol.GetAtoms()])
    np.testing.assert_array_equal(
        graph["bond_features"], np.array([_ogb_bond(b) for b in mol.GetBonds()]).reshape(-1, 3)
    )
    assert graph["atom_features"].dtype == np.int32
    assert (graph["atom_features"] < np.array(ATOM_FEATURE_DIMS)).all()
    assert (graph["bond_features"] < np.array(BOND_FEATURE_DIMS)).all()


def test_aspirin_hand_checked():
    g = mol_to_graph(Chem.MolFromSmiles("CC(=O)Oc1ccccc1C(=O)O"))
    assert g["atom_features"].shape == (13, 9)
    assert g["bond_features"].shape == (13, 3)
    # Methyl C: Z=6 -> 5, degree 4 (1 heavy + 3 H), charge 0 -> 5, 3 H, SP3 -> 2.
    assert g["atom_features"][0].tolist() == [5, 0, 4, 5, 3, 0, 2, 0, 0]
    # Carbonyl C: degree 3, no H, SP2 -> 1.
    assert g["atom_features"][1].tolist() == [5, 0, 3, 5, 0, 0, 1, 0, 0]
    # Carbonyl O: Z=8 -> 7, degree 1.
    assert g["atom_features"][2].tolist() == [7, 0, 1, 5, 0, 0, 1, 0, 0]
    # Aromatic ring C bonded to O: aromatic, in ring.
    assert g["atom_features"][4].tolist() == [5, 0, 3, 5, 0, 0, 1, 1, 1]
    # Aromatic CH.
    assert g["atom_features"][5].tolist() == [5, 0, 3, 5, 1, 0, 1, 1, 1]
    # Bonds: C-C single unconjugated; C=O double conjugated; ring bond aromatic conjugated.
    assert g["bond_features"][0].tolist() == [0, 0, 0]
    assert g["bond_features"][1].tolist() == [1, 0, 1]
    assert g["bond_features"][4].tolist() == [3, 0, 1]
    assert g["bond_atoms"][:3].tolist() == [[0, 1], [1, 2], [1, 3]]


def test_salt_hand_checked():
    g = mol_to_graph(Chem.MolFromSmiles("CC(=O)[O-].[Na+]"))
    assert len(g["atom_features"]) == 5 and len(g["bond_features"]) == 3
    # Na+: Z=11 -> 10, degree 0, charge +1 -> 6, no H, hybridisation misc/unspecified.
    na = g["atom_features"][4]
    assert na[[0, 2, 3, 4, 5, 7, 8]].tolist() == [10, 0, 6, 0, 0, 0, 0]
    # Carboxylate O-: charge -1 -> 4.
    assert g["atom_features"][3][[0, 2, 3, 4]].tolist() == [7, 1, 4, 0]


def test_nitro_hand_checked():
    g = mol_to_graph(Chem.MolFromSmiles("C[N+](=O)[O-]"))
    assert g["atom_features"][1][[0, 2, 3, 4]].tolist() == [6, 3, 6, 0]  # N+: charge +1 -> 6.
    assert g["atom_features"][3][[0, 2, 3]].tolist() == [7, 1, 4]  # O-: charge -1 -> 4.
    assert g["bond_features"].tolist() == [[0, 0, 0], [1, 0, 1], [0, 0, 1]]


def test_stereo_and_chirality():
    g = mol_to_graph(Chem.MolFromSmiles("F/C=C/F"))
    assert g["bond_features"][1][1] == 2  # STEREOE
    g = mol_to_graph(Chem.MolFromSmiles("N[C@@H](C)C(=O)O"))
    assert g["atom_features"][1][1] == 1  # CHI_TETRAHEDRAL_CW


def test_smiles2graph_layout():
    g = smiles2graph("CCO")
    assert g["edge_index"].tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert g["edge_feat"].shape == (4, 3) and g["node_feat"].shape == (3, 9)
    assert g["num_nodes"] == 3
