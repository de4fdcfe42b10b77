"""experiments/make_split.py: fine-tuning's split written without fine-tuning."""

import numpy as np
from script_testing import run_experiment

from moleblend_jax.configs import finetune as finetune_configs
from moleblend_jax.finetune import splits, task_data


def test_writes_the_split_a_fine_tuning_run_saves(tmp_path):
    config = finetune_configs.get_config()
    config.dataset, config.max_molecules, config.data.num_prep_workers = "esol", 60, 1
    config.data.max_atoms = 14  # Skips some of the 60: the split is over the kept records.
    data = task_data.load(config, tmp_path / "net")
    saved = task_data.seed_split(data, "scaffold", 0, workdir=tmp_path / "net")
    out = tmp_path / "made" / "split.json"
    flags = ("--dataset=esol", "--max_molecules=60", "--max_atoms=14", f"--out={out}")
    run = run_experiment("make_split.py", *flags)
    assert run.returncode == 0, run.stderr[-2000:]
    assert out.read_text() == (tmp_path / "net" / "split_scaffold_seed0.json").read_text()
    made = splits.load_split(out)
    assert sum(len(ids) for ids in made.values()) == len(data.records) < 60
    assert sorted(np.concatenate(list(made.values())).tolist()) == sorted(data.ids)
    assert f"train {len(saved['train'])}" in run.stdout


def test_an_unknown_data_set_is_one_line(tmp_path):
    run = run_experiment("make_split.py", "--dataset=nope", f"--out={tmp_path / 'split.json'}")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "nope" in run.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "split.json").exists()
