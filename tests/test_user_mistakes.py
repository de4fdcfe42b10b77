"""Degenerate data and failed writes are refused in one line, before training or without a
partial file (issue 32): single-class and nearly empty tasks, absurd labels, empty split parts,
mismatched split files, blank-SMILES files, duplicate columns, NaN weights, a full disk."""

import errno
import json

import jax
import numpy as np
import pandas as pd
import pytest
from test_own_data import ESOL

from moleblend_jax import atomic
from moleblend_jax.configs import finetune as finetune_configs
from moleblend_jax.data import input_rows
from moleblend_jax.errors import UserError
from moleblend_jax.finetune import catalog, task_data, user_data


def _table(tmp_path, frame, **overrides):
    frame.to_csv(tmp_path / "mine.csv", index=False)
    config = finetune_configs.get_config("tiny")
    config.dataset, config.dataset_path = "csv", str(tmp_path / "mine.csv")
    for key, value in overrides.items():
        config[key] = value
    return config


def _frame(num=12, **labels):
    smiles = pd.read_csv(ESOL)["smiles"].iloc[:num].tolist()
    return pd.DataFrame({"smiles": smiles, **labels})


def test_a_single_class_classification_task_is_refused(tmp_path):
    config = _table(tmp_path, _frame(y=[1] * 12), task_type="classification")
    with pytest.raises(UserError, match=r"'y' has only class 1 \(12 labels\)"):
        user_data.read_table(config)


@pytest.mark.parametrize("present", [0, 2])
def test_a_blank_or_nearly_empty_named_task_is_refused(tmp_path, present):
    sparse = [1.5] * present + [""] * (12 - present)
    config = _table(tmp_path, _frame(y=np.arange(12.0), z=sparse), label_columns="y,z")
    with pytest.raises(UserError, match=f"'z' has {present} labels \\(at least 5"):
        user_data.read_table(config)


@pytest.mark.parametrize("value", ["1e30", "1e39", "inf", "-inf"])
def test_infinite_or_absurd_labels_name_the_column_and_row(tmp_path, value):
    cells = [str(v) for v in np.arange(12.0)]
    cells[2] = value
    config = _table(tmp_path, _frame(y=cells))
    with pytest.raises(UserError, match=f"'y' has 1 values that are infinite .*row 3: '{value}'"):
        user_data.read_table(config)


def test_duplicate_column_names_are_refused(tmp_path):
    (tmp_path / "mine.csv").write_text("smiles,y,y\n" + "CCO,1,2\n" * 6)
    config = _table(tmp_path, pd.DataFrame())
    (tmp_path / "mine.csv").write_text("smiles,y,y\n" + "CCO,1,2\n" * 6)
    with pytest.raises(UserError, match=r"columns named more than once: \['y'\]"):
        user_data.read_table(config)


def test_na_and_none_smiles_are_echoed_not_blanked(tmp_path):
    (tmp_path / "new.csv").write_text("smiles,name\nNA,a\nNone,b\nCCO,c\n")
    items = input_rows.input_items(str(tmp_path / "new.csv"))
    assert [item.smiles for item in items] == ["NA", "None", "CCO"]


def _task_data(labels, task_type="regression"):
    spec = catalog.DatasetSpec(
        name="csv",
        task_type=task_type,
        smiles_column="smiles",
        label_columns=("y",),
        metric="rmse" if task_type == "regression" else "roc_auc",
        default_split="scaffold",
    )
    records = [{"id": i, "labels": np.array([v], np.float32)} for i, v in enumerate(labels)]
    return task_data.TaskData(spec=spec, records=records, task_names=("y",), skipped={})


def test_an_empty_validation_part_is_refused_with_the_counts():
    data = _task_data(np.arange(6.0))
    records_by_split = {"train": data.records[:5], "valid": [], "test": data.records[5:]}
    with pytest.raises(
        UserError, match=r'empty valid part \(\{"train": 5, "valid": 0, "test": 1\}'
    ):
        task_data.check_split_records(data, records_by_split, "scaffold", 0)


def test_a_part_whose_metric_would_be_nan_is_refused():
    data = _task_data([0, 1, 0, 1, 1, 1], "classification")
    records_by_split = {
        "train": data.records[:4],
        "valid": data.records[4:5],
        "test": data.records[5:],
    }
    with pytest.raises(UserError, match="task 'y' has only class 1 in its valid part"):
        task_data.check_split_records(data, records_by_split, "scaffold", 0)


def test_a_split_file_that_does_not_match_the_data_is_refused(tmp_path):
    data = _task_data(np.arange(6.0))
    (tmp_path / "split.json").write_text(json.dumps({"train": [0, 1], "valid": [7], "test": [3]}))
    with pytest.raises(UserError, match="split file .*split.json"):
        task_data.read_split(tmp_path / "split.json", data)
    (tmp_path / "split.json").write_text("{")
    with pytest.raises(UserError, match="split file .*split.json"):
        task_data.read_split(tmp_path / "split.json", data)


def test_one_valid_row_among_blank_smiles_is_refused(tmp_path):
    frame = _frame(30, y=np.arange(30.0))
    frame.loc[1:, "smiles"] = ""
    config = _table(tmp_path, frame)
    config.data.num_prep_workers = 1
    with pytest.raises(UserError, match=r"29 of 30 entries could not be parsed"):
        task_data.load(config, tmp_path / "w")


def test_embedding_refuses_nan_weights(tmp_path):
    from train_testing import random_params, small_config

    from moleblend_jax.inference import Embedder
    from moleblend_jax.train import checkpoint

    config = small_config()
    leaves, tree = jax.tree_util.tree_flatten(random_params(config))
    leaves[-1] = np.full_like(leaves[-1], np.nan)
    params = jax.tree_util.tree_unflatten(tree, leaves)
    saver = checkpoint.Checkpointer(tmp_path / "checkpoints", save_every=1, keep=1)
    saver.save(1, {"params": params}, force=True)
    saver.close()
    with pytest.raises(UserError, match="checkpoints: parameter spd_head/.* holds NaN or inf"):
        Embedder.from_checkpoint(tmp_path / "checkpoints", model_config=config.model)


class _FullDisk:
    """A file whose writes fail with ENOSPC after `room` bytes (a full disk, without root)."""

    def __init__(self, path, mode, room=100):
        self._file, self._room = open(path, mode), room

    def write(self, data):
        self._room -= len(data)
        if self._room < 0:
            self._file.write(data[: len(data) + self._room])
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


@pytest.fixture
def full_disk(monkeypatch):
    monkeypatch.setattr(atomic, "_open", _FullDisk)


def test_a_full_disk_keeps_the_old_file_and_names_the_path(tmp_path, full_disk):
    out = tmp_path / "results.json"
    out.write_text("old\n")
    with pytest.raises(atomic.OutputWriteError, match=f"could not write {out}: No space left"):
        atomic.write_json(out, {"values": list(range(100))})
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_predict_and_embed_leave_no_partial_file_on_a_full_disk(tmp_path, full_disk):
    from moleblend_jax.cli import embed, predict

    table = pd.DataFrame({"id": range(5000), "y": np.linspace(0, 1, 5000)})
    with pytest.raises(UserError, match=f"could not write {tmp_path / 'pred.csv'}"):
        predict.write_predictions(tmp_path / "pred.csv", table)
    rows = input_rows.Featurized([0], [""], ["CCO"], [{}], [""])
    result = type("E", (), {"graph": np.zeros((1, 64), np.float32), "valid": np.ones(1, bool)})
    result.errors = [""]
    with pytest.raises(UserError, match=f"could not write {tmp_path / 'emb.npz'}"):
        embed.write_npz(tmp_path / "emb.npz", rows, result, atoms=False)
    assert list(tmp_path.iterdir()) == []
