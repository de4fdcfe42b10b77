"""Uni-Mol's LMDB layout (data/unimol_lmdb.py): records read in index order per file,
hydrogens stripped from the first conformer, bad records counted, missing files named."""

import pickle
import sys

import numpy as np
import pytest
from rdkit import Chem

pytest.importorskip("lmdb")  # The lmdb extra (CI installs it).
from unimol_testing import unimol_record, write_lmdb, write_unimol_set  # noqa: E402

from moleblend_jax.data import iter_records, unimol_lmdb
from moleblend_jax.data.shards import build_shards
from moleblend_jax.errors import MissingFileError, UserError


def _parts(n_train=12):
    """12 train records (keys 0..11: index order differs from byte order), 2 valid, 2 test."""
    smiles = ["CCO", "c1ccccc1O", "CC(=O)O", "CCN", "OC1CCCCC1", "c1ccncc1", "CC(C)Cl", "CCCl"]
    train = [unimol_record(smiles[i % 8], [float(i)], seed=i) for i in range(n_train)]
    valid = [unimol_record("CCOC", [100.0]), unimol_record("CC#N", [101.0])]
    test = [unimol_record("CSC", [200.0]), unimol_record("NCCO", [201.0])]
    return {"train": train, "valid": valid, "test": test}


def test_records_come_in_index_order_with_their_file(tmp_path):
    parts = _parts()
    molecules = unimol_lmdb.read_set(write_unimol_set(tmp_path / "set", parts))
    assert [m.part for m in molecules] == ["train"] * 12 + ["valid"] * 2 + ["test"] * 2
    # Keys 0..11 in index order (bytewise, b"10" would come before b"2").
    assert [m.key for m in molecules[:12]] == [str(i) for i in range(12)]
    assert [float(m.target[0]) for m in molecules] == [*map(float, range(12)), 100, 101, 200, 201]
    assert molecules[12].name == "valid.lmdb:0" and molecules[12].smiles == "CCOC"
    first = parts["train"][0]
    assert molecules[0].atoms == tuple(first["atoms"])
    np.testing.assert_array_equal(molecules[0].conformer, first["coordinates"][0])


def test_hydrogens_are_stripped_from_the_first_conformer():
    record = unimol_record("OC(=O)c1ccccc1", [1.0], num_conformers=2)
    mol = Chem.MolFromSmiles(record["smi"])
    assert len(record["atoms"]) == 15 and mol.GetNumAtoms() == 9  # 6 hydrogens dropped.
    conformer = np.asarray(record["coordinates"][0])
    coords = unimol_lmdb.heavy_atom_coordinates(mol, record["atoms"], conformer)
    heavy = [i for i, s in enumerate(record["atoms"]) if s != "H"]
    np.testing.assert_array_equal(coords, conformer[heavy])  # The original's H mask.
    # Bonded heavy atoms sit at bond length: the rows are the SMILES's atoms, in its order.
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        assert 1.1 < np.linalg.norm(coords[i] - coords[j]) < 1.6


def test_an_explicit_hydrogen_atom_of_the_smiles_stays_aligned():
    # [2H] is an atom of the SMILES molecule: it keeps its row; the added hydrogens go.
    record = unimol_record("[2H]C(Cl)Cl", [1.0])
    mol = Chem.MolFromSmiles(record["smi"])
    assert record["atoms"] == ["H", "C", "Cl", "Cl", "H"]
    conformer = np.asarray(record["coordinates"][0])
    coords = unimol_lmdb.heavy_atom_coordinates(mol, record["atoms"], conformer)
    np.testing.assert_array_equal(coords, conformer[:4])


def test_atoms_that_do_not_fit_the_smiles_are_refused():
    record = unimol_record("CCO", [1.0])
    mol = Chem.MolFromSmiles("CCO")
    conformer = np.asarray(record["coordinates"][0])
    swapped = ["O", "C", "C", *record["atoms"][3:]]
    with pytest.raises(ValueError, match="do not start with"):
        unimol_lmdb.heavy_atom_coordinates(mol, swapped, conformer)
    with pytest.raises(ValueError, match="conformer"):
        unimol_lmdb.heavy_atom_coordinates(mol, record["atoms"], conformer[:3])


def test_bad_records_are_counted_by_reason(tmp_path):
    parts = _parts(n_train=3)
    no_smiles = dict(parts["train"][0], smi=None)
    no_target = {k: v for k, v in parts["train"][1].items() if k != "target"}
    parts["train"] += [no_smiles, no_target, b"not a pickle", pickle.dumps([1, 2])]
    molecules = unimol_lmdb.read_set(write_unimol_set(tmp_path / "set", parts))
    reasons = [m.skip_reason for m in molecules[:7]]
    assert reasons == ["", "", "", "lmdb_no_smiles", "lmdb_no_target"] + ["lmdb_bad_record"] * 2


def test_missing_files_and_directories_are_named(tmp_path):
    with pytest.raises(MissingFileError, match="not a directory"):
        unimol_lmdb.read_set(tmp_path / "nowhere")
    parts = _parts(n_train=2)
    directory = write_unimol_set(tmp_path / "set", {"train": parts["train"], "test": []})
    with pytest.raises(MissingFileError, match=r"no valid\.lmdb \(the directory holds"):
        unimol_lmdb.read_set(directory)
    write_lmdb(tmp_path / "set" / "valid.lmdb", parts["valid"])
    with pytest.raises(UserError, match=r"test\.lmdb: no records"):
        unimol_lmdb.read_set(directory)
    (tmp_path / "bad").mkdir()
    for name in ("train.lmdb", "valid.lmdb", "test.lmdb"):
        (tmp_path / "bad" / name).write_text("not an lmdb file")
    with pytest.raises(UserError, match="not a readable LMDB file"):
        unimol_lmdb.read_set(tmp_path / "bad")


def test_shards_carry_the_first_conformer_without_hydrogens(tmp_path):
    parts = _parts(n_train=3)
    parts["train"].append(dict(parts["train"][0], atoms=["O", "C", "C", "H"]))  # Misfit.
    parts["train"].append(dict(parts["train"][1], smi="C1CC"))  # RDKit cannot read it.
    molecules = unimol_lmdb.read_set(write_unimol_set(tmp_path / "set", parts))
    labels = np.array([[float(m.target[0])] for m in molecules])
    ids = list(range(len(molecules)))
    source = unimol_lmdb.lmdb_source("t", molecules, ids, labels, ["y"], with_coordinates=True)
    metadata = build_shards(source, tmp_path / "shards", num_shards=1, workers=1, progress=False)
    assert metadata["skipped"] == {"lmdb_atoms_mismatch": 1, "invalid_smiles": 1}
    records = {int(r["id"]): r for r in iter_records(tmp_path / "shards")}
    assert sorted(records) == [0, 1, 2, 5, 6, 7, 8]  # Ids are the rows, train then valid, test.
    for mol_id, record in records.items():
        molecule = molecules[mol_id]
        n = Chem.MolFromSmiles(molecule.smiles).GetNumAtoms()
        assert record["has_coords"] and record["coords"].shape == (n, 3)
        np.testing.assert_allclose(record["coords"], molecule.conformer[:n], atol=1e-6)
        assert record["labels"][0] == molecule.target[0] and record["name"] == molecule.name
    flat = unimol_lmdb.lmdb_source("t", molecules, ids, labels, ["y"], with_coordinates=False)
    build_shards(flat, tmp_path / "flat", num_shards=1, workers=1, conformers="none")
    assert not any(r["has_coords"] for r in iter_records(tmp_path / "flat"))


def test_a_missing_lmdb_package_is_one_line_saying_what_to_install(tmp_path, monkeypatch):
    directory = write_unimol_set(tmp_path / "set", _parts(n_train=1))
    monkeypatch.setitem(sys.modules, "lmdb", None)  # `import lmdb` raises ImportError.
    with pytest.raises(UserError, match=r"needs lmdb: pip install 'moleblend-jax\[lmdb\]'"):
        unimol_lmdb.read_set(directory)
