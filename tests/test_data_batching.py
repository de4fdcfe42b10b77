"""Numpy reference padding (docs/batch_format.md)."""

import numpy as np
import pytest

from moleblend_jax.chem import smiles_to_record
from moleblend_jax.data import pad_batch


def test_pad_batch_values():
    recs = [
        smiles_to_record("CCO", 0, labels=[1.0, np.nan]),
        smiles_to_record("[Na+].[Cl-]", 5, labels=[np.nan, 2.0]),
    ]
    b = pad_batch(recs, num_atoms=4, batch_size=3)
    assert b["atom_features"].shape == (3, 4, 9) and b["atom_features"].dtype == np.int32
    assert b["path_edges"].shape == (3, 4, 4, 5, 3)
    assert b["atom_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    assert b["mol_mask"].tolist() == [True, True, False]
    assert b["id"].tolist() == [0, 5, -1]
    np.testing.assert_array_equal(b["atom_features"][0, :3], recs[0]["atom_features"] + 1)
    assert (b["atom_features"][0, 3] == 0).all() and (b["atom_features"][2] == 0).all()
    # SPD shifted by one: self 1, bonded 2, two hops 3, unreachable 511, padding 0.
    assert b["spd"][0].tolist() == [[1, 2, 3, 0], [2, 1, 2, 0], [3, 2, 1, 0], [0, 0, 0, 0]]
    assert b["spd"][1, 0, 1] == 511
    # Path 0 -> 2 in ethanol: bond 0 then bond 1, bond features + 1.
    bf = recs[0]["bond_features"] + 1
    np.testing.assert_array_equal(b["path_edges"][0, 0, 2, 0], bf[0])
    np.testing.assert_array_equal(b["path_edges"][0, 0, 2, 1], bf[1])
    assert (b["path_edges"][0, 0, 2, 2:] == 0).all() and (b["path_edges"][0, 0, 0] == 0).all()
    assert (b["path_edges"][1] == 0).all()
    assert b["labels"].tolist() == [[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]]
    assert b["label_mask"].tolist() == [[True, False], [False, True], [False, False]]
    assert b["has_coords"].tolist() == [False, False, False]


def test_pad_batch_rejects_large_molecule():
    with pytest.raises(ValueError):
        pad_batch([smiles_to_record("CCCCC", 0)], num_atoms=4)
