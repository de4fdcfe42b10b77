"""Fine-tuning data: through the shard writer once, records keyed by id, QM9 in label units,
splits over record ids (saved, read back, checked against the data)."""

import json
import os

import numpy as np
import pytest

from moleblend_jax.configs import finetune as finetune_configs
from moleblend_jax.finetune import catalog, splits, task_data


def _config(dataset="esol", max_molecules=60):
    config = finetune_configs.get_config("tiny")
    config.dataset = dataset
    config.max_molecules = max_molecules
    config.data.num_prep_workers = 1
    return config


@pytest.fixture(scope="module")
def esol(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("esol")
    return workdir, task_data.load(_config(), workdir)


def test_dataset_goes_through_the_shard_writer_keyed_by_row(esol):
    workdir, data = esol
    metadata = json.loads((workdir / "data" / "esol" / "metadata.json").read_text())
    assert metadata["source_kind"] == "table" and metadata["num_written"] == len(data.records)
    assert data.skipped == metadata["skipped"] and data.num_source_molecules == 60
    smiles, labels, task_names = catalog.load_dataset("esol")
    rows = np.sort(np.random.default_rng(0).permutation(len(smiles))[:60])
    assert set(data.ids) <= set(rows.tolist()) and data.ids == sorted(data.ids)
    assert data.task_names == tuple(task_names)
    for record in data.records:  # Labels follow the row id.
        np.testing.assert_array_equal(record["labels"], labels[int(record["id"])])
        assert record["has_coords"] == 0


def test_shards_are_reused_and_rebuilt_when_the_data_changes(esol):
    workdir, data = esol
    meta = workdir / "data" / "esol" / "metadata.json"
    stamp = os.path.getmtime(meta)
    again = task_data.load(_config(), workdir)
    assert again.ids == data.ids and os.path.getmtime(meta) == stamp
    other = task_data.load(_config(max_molecules=40), workdir)  # A prefix of the same draw.
    assert other.num_source_molecules == 40 and set(other.ids) <= set(data.ids)


def test_qm9_labels_are_in_label_units(tmp_path):
    data = task_data.load(_config("qm9", max_molecules=30), tmp_path)
    frame = catalog.load_qm9(nrows=30).set_index("index")
    assert data.task_names == catalog.QM9_TASKS and data.ids == frame.index.tolist()
    expected = frame.loc[data.ids, list(catalog.QM9_TASKS)].to_numpy(np.float32)
    np.testing.assert_array_equal(np.stack([r["labels"] for r in data.records]), expected)
    assert all(r["has_coords"] == 1 for r in data.records)


def test_split_is_over_record_ids(esol, tmp_path):
    _, data = esol
    split = task_data.make_split(data, "scaffold", seed=0)
    assert sorted(i for name in splits.SPLIT_NAMES for i in split[name]) == sorted(data.ids)
    records_by_split = task_data.split_records(data, split)
    assert [int(r["id"]) for r in records_by_split["test"]] == split["test"]
    path = tmp_path / "split.json"
    splits.save_split(path, split)
    assert task_data.read_split(path, data) == split
    assert task_data.make_split(data, "random", 1) != task_data.make_split(data, "random", 2)


def test_split_file_errors_name_the_file(esol, tmp_path):
    _, data = esol
    with pytest.raises(FileNotFoundError, match="nope.json does not exist"):
        task_data.read_split(tmp_path / "nope.json", data)
    wrong = tmp_path / "indices.json"
    splits.save_split(wrong, splits.random_split(len(data.ids), seed=0))  # Positions, not ids.
    with pytest.raises(ValueError, match="indices.json .esol.: split ids do not match"):
        task_data.read_split(wrong, data)
