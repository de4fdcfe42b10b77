"""Records (docs/batch_format.md) and conformers (SPEC 1)."""

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from moleblend_jax.chem import SkipMolecule, mol_to_record, smiles_to_record
from moleblend_jax.chem.conformers import parse_xyz_block, rdkit_conformer
from moleblend_jax.schema import RECORD_KEYS, UNREACHABLE_SPD


def test_record_keys_dtypes_shapes():
    rec = smiles_to_record("CC(=O)Oc1ccccc1C(=O)O", 7, labels=[1.0, np.nan])
    assert set(rec) == set(RECORD_KEYS) | {"labels"}
    n = 13
    assert rec["id"] == 7 and rec["id"].dtype == np.int64
    assert isinstance(rec["smiles"], str)
    assert rec["atom_features"].shape == (n, 9) and rec["atom_features"].dtype == np.int32
    assert rec["bond_features"].shape == (13, 3) and rec["bond_atoms"].shape == (13, 2)
    assert rec["spd"].shape == (n, n) and rec["path_bonds"].shape == (n, n, 5)
    assert rec["coords"].shape == (n, 3) and rec["coords"].dtype == np.float32
    assert rec["has_coords"] == 0 and not rec["coords"].any()
    assert rec["labels"].dtype == np.float32 and np.isnan(rec["labels"][1])


def test_rdkit_conformer_is_deterministic_and_in_graph_order():
    a = smiles_to_record("CC(=O)Oc1ccccc1C(=O)O", 3, conformers="rdkit")
    b = smiles_to_record("CC(=O)Oc1ccccc1C(=O)O", 3, conformers="rdkit")
    assert a["has_coords"] == 1
    np.testing.assert_array_equal(a["coords"], b["coords"])
    # Bonded heavy atoms sit at bond-length distances: coordinates follow graph atom order.
    ends = a["bond_atoms"]
    lengths = np.linalg.norm(a["coords"][ends[:, 0]] - a["coords"][ends[:, 1]], axis=1)
    assert (lengths > 1.1).all() and (lengths < 1.6).all()


def test_a_molecule_gets_one_conformer_whatever_its_row():
    """The ETKDG seed comes from the canonical SMILES (issue 32): the same molecule on two
    rows of a file gets the same coordinates, another seed other ones."""
    rows = [smiles_to_record("CCCCOC(=O)c1ccccc1N", i, conformers="rdkit") for i in (0, 41)]
    np.testing.assert_array_equal(rows[0]["coords"], rows[1]["coords"])
    other = smiles_to_record("CCCCOC(=O)c1ccccc1N", 0, conformers="rdkit", seed=1)
    assert not np.array_equal(other["coords"], rows[0]["coords"])


def test_rdkit_conformers_are_in_their_principal_axes_frame():
    """As DFT's standard orientation (QM9, PCQM4Mv2): the all-atom centroid at the origin and
    the inertia axes along x, y, z, so that the direction target has a frame (SPEC 5)."""
    mol = Chem.MolFromSmiles("CC(=O)Oc1ccccc1C(=O)O")
    for seed in (0, 1, 2):
        coords, _ = rdkit_conformer(mol, seed=seed)
        # The heavy atoms of one molecule: their spread is largest along x, smallest along z.
        spread = coords.std(axis=0)
        assert spread[0] > spread[1] > spread[2], (seed, spread)
        assert np.abs(coords.mean(axis=0)).max() < 0.5, seed


def test_salt_fragments_do_not_overlap():
    coords, reason = rdkit_conformer(Chem.MolFromSmiles("[Na+].[Cl-]"), seed=0)
    assert reason.startswith("etkdg")
    assert np.linalg.norm(coords[0] - coords[1]) > 1.0


def test_sdf_conformer_kept():
    mol_h = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(mol_h, randomSeed=1)
    mol = Chem.RemoveHs(mol_h)
    rec = mol_to_record(mol, 0)
    assert rec["has_coords"] == 1
    np.testing.assert_allclose(rec["coords"], mol.GetConformer().GetPositions(), atol=1e-6)


def test_given_coords_and_salt_spd():
    coords = np.arange(15, dtype=np.float32).reshape(5, 3) / 4  # Bonds of 1.3 and 2.6 A.
    rec = smiles_to_record("CC(=O)[O-].[Na+]", 1, conformers=coords)
    np.testing.assert_array_equal(rec["coords"], coords)
    assert rec["has_coords"] == 1
    assert (rec["spd"][4, :4] == UNREACHABLE_SPD).all()
    with pytest.raises(SkipMolecule) as err:
        smiles_to_record("CC", 1, conformers=coords)
    assert err.value.reason == "coords_shape_mismatch"


@pytest.mark.parametrize(
    "smiles,reason",
    [
        ("C1CC", "invalid_smiles"),
        ("not a smiles", "invalid_smiles"),
        ("C(C)(C)(C)(C)C", "valence_error"),
        ("c1cccc1", "kekulize_error"),
        ("", "no_atoms"),
        ("C" * 40, "too_many_atoms"),
    ],
)
def test_skip_reasons(smiles, reason):
    with pytest.raises(SkipMolecule) as err:
        smiles_to_record(smiles, 0, max_atoms=32)
    assert err.value.reason == reason


def test_parse_xyz_block():
    xyz = "[[-0.01,1.08,0.008],[0.002,-0.006,0.0019]]"
    np.testing.assert_allclose(
        parse_xyz_block(xyz, 2), [[-0.01, 1.08, 0.008], [0.002, -0.006, 0.0019]]
    )


def test_implausible_coordinates_are_skipped():
    coords = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [3.0, 0.0, 0.0]], np.float32)
    assert smiles_to_record("CCO", 0, conformers=coords)["has_coords"] == 1
    far = coords + [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1e7]]  # An atom 10^7 A away.
    stretched = coords * [[4.0, 1.0, 1.0]]  # Bonds of 6 A, near the origin.
    for bad in (far, stretched):
        with pytest.raises(SkipMolecule) as err:
            smiles_to_record("CCO", 0, conformers=bad.astype(np.float32))
        assert err.value.reason == "implausible_coordinates"
