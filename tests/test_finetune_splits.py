"""Scaffold and random splits: determinism, disjoint scaffolds, sizes, JSON round trip."""

import numpy as np
import pytest

from moleblend_jax.finetune import catalog, splits


@pytest.fixture(scope="module")
def esol_smiles():
    return catalog.load_dataset("esol")[0]


@pytest.fixture(scope="module")
def esol_split(esol_smiles):
    return splits.scaffold_split(esol_smiles)


def test_scaffold_split_is_deterministic_and_partitions(esol_smiles, esol_split):
    first = esol_split
    second = splits.scaffold_split(list(esol_smiles))
    for name in splits.SPLIT_NAMES:
        np.testing.assert_array_equal(first[name], second[name])
        assert first[name].dtype == np.int64
    splits.check_split(first, len(esol_smiles))


def test_no_scaffold_in_two_splits(esol_smiles, esol_split):
    split = esol_split
    owners = {}
    for name in splits.SPLIT_NAMES:
        for index in split[name]:
            scaffold = splits.murcko_scaffold(esol_smiles[index])
            assert owners.setdefault(scaffold, name) == name, scaffold


def test_scaffold_fractions(esol_smiles, esol_split):
    num = len(esol_smiles)
    split = esol_split
    sizes = {name: len(split[name]) for name in splits.SPLIT_NAMES}
    assert sizes["train"] <= 0.8 * num and sizes["valid"] <= 0.1 * num
    assert sizes["train"] >= 0.79 * num and sizes["valid"] >= 0.09 * num
    other = splits.scaffold_split(esol_smiles[:400], (0.6, 0.2, 0.2))
    assert 0.59 * 400 <= len(other["train"]) <= 0.6 * 400


def test_scaffold_groups_go_largest_first():
    benzenes = ["c1ccccc1C", "c1ccccc1CC", "c1ccccc1O", "c1ccccc1N", "c1ccccc1Cl", "c1ccccc1F"]
    pyridines = ["c1ccncc1C", "c1ccncc1O"]
    smiles = [*benzenes[:3], "CCO", *pyridines, *benzenes[3:], "C1CC1C", "not a smiles"]
    # Groups: benzene (6), pyridine (2), acyclic '' (1), cyclopropane (1), invalid (1); M = 11.
    split = splits.scaffold_split(smiles, (0.8, 0.1, 0.1))
    # Train holds 8.8: benzene + pyridine; the three singletons tie, so the one seen first ('')
    # takes valid (1.1) and the rest go to test.
    assert split["train"].tolist() == [0, 1, 2, 4, 5, 6, 7, 8]
    assert split["valid"].tolist() == [3] and split["test"].tolist() == [9, 10]
    assert splits.murcko_scaffold("not a smiles") is None
    assert splits.murcko_scaffold("CCO") == ""
    groups = splits.scaffold_groups(["C[C@H](N)c1ccccc1", "C[C@@H](N)c1ccccc1", "bad", "bad"])
    assert groups == [[0, 1], [2], [3]]  # Chirality ignored; each invalid SMILES alone.


def test_random_split_seeded_and_sized():
    a = splits.random_split(1000, seed=3)
    b = splits.random_split(1000, seed=3)
    c = splits.random_split(1000, seed=4)
    for name in splits.SPLIT_NAMES:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["test"], c["test"])
    assert [len(a[n]) for n in splits.SPLIT_NAMES] == [800, 100, 100]
    splits.check_split(a, 1000)
    qm9 = splits.random_split(catalog.QM9_NUM_MOLECULES, 0, **catalog.QM9_SPLIT_SIZES)
    assert [len(qm9[n]) for n in splits.SPLIT_NAMES] == [110_000, 10_000, 10_831]
    with pytest.raises(ValueError):
        splits.random_split(10, valid_size=6, test_size=6)


def test_make_split_dispatch(esol_smiles):
    small = esol_smiles[:50]
    scaffold = splits.make_split("scaffold", small, seed=7)
    np.testing.assert_array_equal(scaffold["test"], splits.scaffold_split(small)["test"])
    rand = splits.make_split("random", small, seed=7)
    np.testing.assert_array_equal(rand["test"], splits.random_split(50, 7)["test"])
    with pytest.raises(ValueError):
        splits.make_split("stratified", small)
    with pytest.raises(ValueError):
        splits.scaffold_split(small, (0.8, 0.1, 0.2))


def test_save_load_round_trip(tmp_path):
    split = splits.random_split(57, seed=1)
    path = tmp_path / "split.json"
    splits.save_split(path, split)
    loaded = splits.load_split(path)
    for name in splits.SPLIT_NAMES:
        np.testing.assert_array_equal(loaded[name], split[name])
        assert loaded[name].dtype == np.int64


def test_check_split_rejects_overlap():
    with pytest.raises(ValueError):
        splits.check_split({"train": np.array([0, 1]), "valid": np.array([1]), "test": []}, 3)
