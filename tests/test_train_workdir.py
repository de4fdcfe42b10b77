"""The workdir's config.json, checked on resume, and its lock."""

import json
import logging

import pytest
from train_testing import small_config

from moleblend_jax.errors import UserError
from moleblend_jax.train import workdir as workdir_lib
from moleblend_jax.train.budget import pretraining_budget
from moleblend_jax.train.lock import locked
from moleblend_jax.train.paths import as_path


def test_resume_refuses_a_changed_model_data_or_batch_size(tmp_path, caplog):
    workdir = as_path(tmp_path)
    workdir_lib.check_config(workdir, small_config("/data/a"), resuming=False)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["data.dir"] == "/data/a" and saved["data.buckets"] == [16]

    changed = small_config("/data/b", batch_size=32, **{"optimizer.peak_lr": 0.1})
    with pytest.raises(UserError, match=r"batch_size: 16 -> 32; data.dir: '/data/a' -> '/data/b'"):
        workdir_lib.check_config(workdir, changed, resuming=True)
    assert json.loads((tmp_path / "config.json").read_text()) == saved

    longer = small_config("/data/a", total_steps=100, **{"optimizer.peak_lr": 0.1})
    with caplog.at_level(logging.WARNING):
        workdir_lib.check_config(workdir, longer, resuming=True)
    assert "optimizer.peak_lr: 0.001 -> 0.1; total_steps: 8 -> 100" in caplog.text
    assert json.loads((tmp_path / "config.json").read_text()) == saved  # The first start's.


def test_resume_of_a_run_saved_with_the_retired_feature_counts(tmp_path):
    workdir = as_path(tmp_path)
    workdir_lib.check_config(workdir, small_config("/data/a"), resuming=False)
    saved = json.loads((tmp_path / "config.json").read_text())
    old = {**saved, "model.num_atom_features": 9, "model.num_bond_features": 3}
    (tmp_path / "config.json").write_text(json.dumps(old))
    workdir_lib.check_config(workdir, small_config("/data/a"), resuming=True)  # No difference.
    (tmp_path / "config.json").write_text(json.dumps({**old, "model.num_bond_features": 4}))
    with pytest.raises(UserError, match=r"model.num_bond_features: 4 -> None"):
        workdir_lib.check_config(workdir, small_config("/data/a"), resuming=True)


def test_a_second_run_on_a_locked_workdir_exits_naming_the_holder(tmp_path, qm9_shards):
    import os
    import socket

    from moleblend_jax.train import loop

    holder = f"pid {os.getpid()} on host {socket.gethostname()}"
    with locked(as_path(tmp_path)):
        with pytest.raises(UserError, match=holder):
            loop.train_and_evaluate(small_config(qm9_shards), tmp_path)
    assert not (tmp_path / "checkpoints").exists()
    with locked(as_path(tmp_path)):  # Released: the next run may start.
        pass


def test_pretraining_budget_reads_the_workdir(tmp_path):
    """Steps from the newest checkpoint, batch from config.json, molecules from the shards'
    metadata (default data: WORKDIR/data/<default_source>); {} without a workdir's config."""
    import numpy as np

    from moleblend_jax.train import checkpoint

    config = small_config(None, batch_size=16, **{"data.default_source": "moses"})
    workdir_lib.check_config(as_path(tmp_path), config, resuming=False)
    saver = checkpoint.Checkpointer(tmp_path / "checkpoints", save_every=1, keep=2)
    for step in (4, 8):
        saver.save(step, {"params": {"w": np.zeros(2, np.float32)}}, force=True)
    saver.close()
    assert pretraining_budget(tmp_path / "checkpoints") == {
        "pretrain_steps": 8, "pretrain_batch": 16
    }  # fmt: skip
    (tmp_path / "data" / "moses").mkdir(parents=True)
    (tmp_path / "data" / "moses" / "metadata.json").write_text(json.dumps({"num_written": 123}))
    budget = pretraining_budget(tmp_path / "checkpoints")
    assert budget == {"pretrain_steps": 8, "pretrain_batch": 16, "pretrain_molecules": 123}
    assert pretraining_budget(tmp_path / "elsewhere" / "checkpoints") == {}
