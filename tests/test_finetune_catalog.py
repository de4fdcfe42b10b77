"""Data set registry and loaders: MoleculeNet fixtures, bundled copies, QM9 from qm9pack."""

import math
from pathlib import Path

import numpy as np
import pytest

from moleblend_jax.finetune import catalog

FIXTURES = Path(__file__).parent / "data" / "moleculenet"
MOLECULENET = (
    "bbbp", "tox21", "toxcast", "sider", "clintox", "muv", "hiv", "bace", "esol", "freesolv",
    "lipophilicity",
)  # fmt: skip


def test_registry_entries_are_consistent():
    assert set(MOLECULENET) | {"b3db", "qm9"} == set(catalog.DATASETS)
    for name, spec in catalog.DATASETS.items():
        assert spec.name == name
        assert spec.task_type in catalog.TASK_TYPES
        assert spec.metric in catalog.METRIC_NAMES
        assert spec.default_split in ("scaffold", "random")
        assert spec.needs_3d == (name == "qm9")
        assert spec.higher_is_better == (spec.task_type == "classification")
        if spec.label_columns is not None:
            assert len(spec.label_columns) == spec.num_tasks
    assert {n for n, s in catalog.DATASETS.items() if s.bundled_file} == {
        "esol", "freesolv", "lipophilicity", "b3db"
    }  # fmt: skip


@pytest.mark.parametrize(
    "name, rows, tasks",
    [
        ("bbbp", 7, 1), ("tox21", 4, 12), ("toxcast", 3, 3), ("sider", 3, 3), ("clintox", 4, 2),
        ("muv", 3, 17), ("hiv", 3, 1), ("bace", 3, 1), ("esol", 3, 1), ("freesolv", 3, 1),
        ("lipophilicity", 3, 1),
    ],
)  # fmt: skip
def test_fixture_shapes_and_dtypes(name, rows, tasks):
    smiles, labels, task_names = catalog.load_dataset(name, FIXTURES / f"{name}.csv")
    assert len(smiles) == rows and all(isinstance(s, str) and s == s.strip() for s in smiles)
    assert labels.shape == (rows, tasks) and labels.dtype == np.float32
    assert len(task_names) == tasks


def test_missing_labels_are_nan():
    _, labels, names = catalog.load_moleculenet_csv("tox21", FIXTURES / "tox21.csv")
    assert names == list(catalog.TOX21_TASKS)
    assert np.isnan(labels[0, 3]) and np.isnan(labels[0, 4]) and labels[0, 2] == 1.0
    assert int(np.isnan(labels).sum()) == 2 + 2 + 10
    assert not np.isnan(labels[3]).any()
    _, muv, _ = catalog.load_moleculenet_csv("muv", FIXTURES / "muv.csv")
    assert int((~np.isnan(muv[1])).sum()) == 1 and muv[1, 11] == 1.0


def test_gzipped_csv_reads_the_same():
    plain = catalog.load_moleculenet_csv("tox21", FIXTURES / "tox21.csv")
    gz = catalog.load_moleculenet_csv("tox21", FIXTURES / "tox21_gz.csv.gz")
    assert plain[0] == gz[0] and plain[2] == gz[2]
    np.testing.assert_array_equal(plain[1], gz[1])


def test_all_other_columns_are_tasks_for_toxcast_and_sider():
    _, labels, names = catalog.load_moleculenet_csv("toxcast", FIXTURES / "toxcast.csv")
    assert names[0] == "ACEA_T47D_80hr_Negative" and len(names) == 3
    assert np.isnan(labels[0, 2]) and np.isnan(labels[1, :2]).all()
    _, _, names = catalog.load_moleculenet_csv("sider", FIXTURES / "sider.csv")
    assert names[1] == "Metabolism and nutrition disorders"


def test_extra_columns_are_dropped():
    _, _, names = catalog.load_moleculenet_csv("hiv", FIXTURES / "hiv.csv")
    assert names == ["HIV_active"]
    smiles, labels, names = catalog.load_moleculenet_csv("bace", FIXTURES / "bace.csv")
    assert names == ["Class"] and labels[:, 0].tolist() == [1.0, 0.0, 1.0]
    assert smiles[0].startswith("O1CC")
    _, _, names = catalog.load_moleculenet_csv("bbbp", FIXTURES / "bbbp.csv")
    assert names == ["p_np"]


def test_drop_invalid_smiles():
    smiles, labels, _ = catalog.load_dataset("bbbp", FIXTURES / "bbbp.csv", drop_invalid=True)
    assert len(smiles) == 6 and "c1ccccc1N(=O)(=O)=O" not in smiles
    assert labels[:, 0].tolist() == [1, 1, 1, 1, 1, 0]


def test_wrong_file_and_unknown_name_raise(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        catalog.load_moleculenet_csv("clintox", FIXTURES / "bbbp.csv")
    with pytest.raises(KeyError):
        catalog.load_dataset("pcba")
    with pytest.raises(ValueError, match="not bundled"):
        catalog.load_dataset("tox21")
    bad = tmp_path / "bbbp.csv"
    bad.write_text("smiles,p_np\nCCO,2\n")
    with pytest.raises(ValueError, match="0/1"):
        catalog.load_moleculenet_csv("bbbp", bad)


@pytest.mark.parametrize(
    "name, rows, mean",
    [("esol", 1144, -3.058), ("freesolv", 642, -3.803), ("lipophilicity", 4200, 2.186)],
)
def test_bundled_regression_sets(name, rows, mean):
    smiles, labels, _ = catalog.load_dataset(name)
    assert len(smiles) == rows and labels.shape == (rows, 1)
    assert not np.isnan(labels).any()
    assert abs(float(labels.mean()) - mean) < 1e-3


def test_bundled_b3db_maps_labels():
    smiles, labels, names = catalog.load_dataset("b3db")
    assert len(smiles) == 7807 and names == ["BBB+/BBB-"]
    assert set(np.unique(labels).tolist()) == {0.0, 1.0}
    assert int(labels.sum()) == 4956  # BBB+ count of B3DB_classification.tsv.


def test_qm9_units_and_geometry():
    frame = catalog.load_qm9(nrows=3, with_geometry=True)
    assert frame["index"].tolist() == [1, 2, 3]
    assert frame["smiles"].tolist()[:2] == ["C", "N"]
    methane = frame.iloc[0]
    # qm9pack stores Hartree: HOMO of CH4 is -0.3877 Ha, U0 -40.47893 Ha.
    assert math.isclose(methane["homo"], -0.3877 * 27.211386, rel_tol=1e-9)
    assert math.isclose(methane["u0"], -40.47893 * 27.211386, rel_tol=1e-9)
    assert methane["mu"] == 0.0 and methane["alpha"] == 13.21 and methane["cv"] == 6.469
    symbols, coords = catalog.parse_qm9_geometry(methane["elements"], methane["xyz"])
    assert symbols == ["C", "H", "H", "H", "H"] and coords.shape == (5, 3)
    assert coords.dtype == np.float32 and abs(coords[0, 1] - 1.0858041578) < 1e-6
    assert catalog.qm9_to_report_units("gap", 0.05) == pytest.approx(50.0)
    assert catalog.qm9_to_report_units("u0", 0.05) == 0.05
    assert catalog.QM9_REPORT_UNIT["homo"] == "meV" and catalog.QM9_REPORT_UNIT["u0"] == "eV"


def test_qm9_full_table_spans_the_three_part_files():
    smiles, labels, names = catalog.load_dataset("qm9")
    assert names == list(catalog.QM9_TASKS)
    assert len(smiles) == catalog.QM9_NUM_MOLECULES and labels.shape == (len(smiles), 12)
    assert np.isfinite(labels).all() and smiles[-1] == "C1N2C3C4C5OC13C2C45"
    gap = labels[:, names.index("gap")]
    assert 0.5 < float(gap.mean()) < 15.0  # eV, not Hartree.


def test_bundled_activity_csv_reads_as_a_users_file_with_its_split_column():
    """moleculeace_chembl2835_ki.csv, read as docs/results.md's activity study does."""
    from moleblend_jax.configs import finetune as finetune_configs
    from moleblend_jax.finetune import user_data

    config = finetune_configs.get_config("small")
    path = str(catalog.bundled_path("moleculeace_chembl2835_ki.csv"))
    config.update(dict(dataset="csv", dataset_path=path, label_columns="y"))
    config.update(dict(split="column", split_column="split"))
    table = user_data.read_table(config)
    assert table.spec.task_type == "regression" and table.task_names == ("y",)
    assert table.labels.shape == (615, 1) and abs(float(table.labels.mean()) + 0.335) < 1e-3
    assert table.row_splits.count("train") == 489 and table.row_splits.count("test") == 126
