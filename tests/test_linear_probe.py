"""experiments/linear_probe.py: ridge / logistic regression on frozen embeddings of a random
init or a checkpoint, on fine-tuning's records and split (tiny runs)."""

import dataclasses
import json

import numpy as np
import pytest
from script_testing import run_experiment
from train_testing import random_params, small_config

from moleblend_jax import model as model_lib
from moleblend_jax.configs import finetune as finetune_configs
from moleblend_jax.finetune import task_data
from moleblend_jax.train import checkpoint


def test_random_init_probe_reads_fine_tunings_split(tmp_path):
    config = finetune_configs.get_config()
    config.dataset, config.max_molecules, config.data.num_prep_workers = "esol", 60, 1
    config.data.max_atoms = 32
    data = task_data.load(config, tmp_path / "net")
    task_data.seed_split(data, "scaffold", 0, workdir=tmp_path / "net")
    out = tmp_path / "probe.json"
    run = run_experiment(
        "linear_probe.py",
        "--dataset=esol", "--max_molecules=60", "--max_atoms=32", "--config=configs/base.py:tiny",
        "--seeds=0,1", f"--split_file={tmp_path / 'net' / 'split_scaffold_seed0.json'}",
        f"--workdir={tmp_path / 'probe'}", f"--out={out}",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["init"] == "linear_probe" and result["init_checkpoint"] is None
    assert result["metric"] == "rmse" and result["num_records"] == len(data.records)
    seeds = result["seeds"]
    assert [s["seed"] for s in seeds] == [0, 1] and seeds[0]["test"] != seeds[1]["test"]
    for s in seeds:  # A new random init per seed; alpha from the grid; every molecule embedded.
        assert s["strength_per_task"][0] in result["config"]["strength_grid"]
        assert s["not_embedded"] == 0 and np.isfinite(s["test"])
    assert not list((tmp_path / "probe").glob("split_*.json"))  # The given split, not a new one.


def test_checkpoint_probe_classifies_with_seed_independent_embeddings(tmp_path):
    config = small_config()
    params = random_params(config)
    ckpt = checkpoint.Checkpointer(tmp_path / "pre" / "checkpoints", save_every=1, keep=1)
    ckpt.save(3, {"params": params}, force=True)
    ckpt.close()
    sizes = dataclasses.asdict(model_lib.ModelConfig.coerce(config.model))
    (tmp_path / "pre" / "model_config.json").write_text(json.dumps(sizes))
    out = tmp_path / "probe.json"
    run = run_experiment(
        "linear_probe.py",
        "--dataset=b3db", "--max_molecules=150", "--max_atoms=32", "--seeds=0,1",
        f"--checkpoint={tmp_path / 'pre'}", f"--workdir={tmp_path / 'w'}", f"--out={out}",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["metric"] == "roc_auc" and result["init_checkpoint"] == str(tmp_path / "pre")
    first, second = result["seeds"]
    assert first["test"] == second["test"] and 0.0 <= first["test"] <= 1.0
    assert first["strength_per_task"][0] in result["config"]["strength_grid"]


def test_embedder_reads_the_checkpoint_step_it_is_given(tmp_path):
    from moleblend_jax.errors import UserError
    from moleblend_jax.inference import Embedder

    config = small_config()
    ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints", save_every=1, keep=2)
    for step, seed in ((3, 0), (5, 1)):
        ckpt.save(step, {"params": random_params(config, seed)}, force=True)
    ckpt.close()
    smiles = ["CCO", "c1ccccc1O"]

    def embed(step):
        return Embedder.from_checkpoint(tmp_path, model_config=config.model, step=step).embed(
            smiles
        )

    newest, third, fifth = embed(None), embed(3), embed(5)
    np.testing.assert_array_equal(newest, fifth)
    assert np.abs(third - fifth).max() > 1e-3  # Other params, other embeddings.
    with pytest.raises(UserError, match=r"No step 4 .* \[3, 5\]"):
        embed(4)
