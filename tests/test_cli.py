"""The `moleblend` command (moleblend_jax/cli): its overview, each subcommand's help, and
`finetune` then `predict` through the dispatcher on a tiny CSV; the Python API
(moleblend_jax/api.py) on the same CSV gives the same numbers."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from test_own_data import _write_fixture
from train_testing import REPO

from moleblend_jax import api
from moleblend_jax.cli import SUBCOMMANDS
from moleblend_jax.errors import UserError

SMALL_MODEL = {"num_layers": 2, "hidden_dim": 32, "ffn_dim": 32, "num_heads": 4, "num_kernels": 16}
SETTINGS = {
    "id_column": "name",
    "split_column": "split",
    "epochs": 1,
    "warmup_epochs": 0,
    "num_seeds": 1,
    "batch_size": 32,
}
DATA = {"buckets": (32,), "max_atoms": 32, "num_prep_workers": 1}
NEW = ["CCO", "not a molecule", "c1ccccc1O"]


def moleblend(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    """`moleblend ARGS` as `python -m moleblend_jax.cli ARGS` (the console script's module)."""
    return subprocess.run(
        [sys.executable, "-m", "moleblend_jax.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _config_flags(csv) -> list[str]:
    flags = ["--config=configs/finetune.py:tiny", "--config.dataset=csv"]
    flags.append(f"--config.dataset_path={csv}")
    flags += [f"--config.{key}={value}" for key, value in SETTINGS.items()]
    flags += [f"--config.model.{key}={value}" for key, value in SMALL_MODEL.items()]
    flags += ["--config.data.buckets=(32,)", "--config.data.max_atoms=32"]
    return flags + ["--config.data.num_prep_workers=1"]


def test_help_lists_every_subcommand():
    run = moleblend("--help")
    assert run.returncode == 0, run.stderr
    listed = [line.split()[0] for line in run.stdout.splitlines() if line.startswith("  ")]
    assert listed[: len(SUBCOMMANDS)] == list(SUBCOMMANDS)
    assert list(SUBCOMMANDS) == [
        "pretrain", "finetune", "sweep", "predict", "embed", "build-shards", "import-checkpoint",
        "compare", "aot", "package-encoder",
    ]  # fmt: skip


def test_no_or_an_unknown_subcommand_is_refused():
    assert moleblend().returncode == 2
    run = moleblend("train")
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        "error: unknown subcommand 'train'; give one of " + ", ".join(SUBCOMMANDS)
    ]


def test_a_stray_positional_argument_is_refused(tmp_path):
    """A typo such as a missing `--` must not be ignored (build-shards used to drop it)."""
    run = moleblend("build-shards", "--input=qm9", f"--output={tmp_path / 'shards'}", "stray")
    assert run.returncode != 0 and "Unexpected arguments: ['stray']" in run.stdout + run.stderr
    assert not (tmp_path / "shards").exists()


def test_a_retired_config_key_is_one_line():
    run = moleblend(
        "pretrain", "--config=configs/base.py:tiny", "--config.model.num_bond_features=3"
    )
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        "error: --config.model.num_bond_features is not a setting: every record has 3 "
        "(moleblend_jax/schema.py); drop the flag"
    ]


def test_subcommand_help_shows_its_usage_and_only_its_flags():
    run = moleblend("predict", "--help")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: moleblend predict [flags]")
    assert "moleblend predict --workdir=FINETUNE_DIR --input=new.csv" in run.stdout
    assert "--workdir" in run.stdout and "--smiles_column" in run.stdout
    assert "--config" not in run.stdout and "--num_shards" not in run.stdout  # Other commands'.


@pytest.fixture(scope="module")
def by_api(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    _write_fixture(root / "mine.csv")
    results, workdir = api.finetune(
        root / "ft", root / "mine.csv", variant="tiny", model=SMALL_MODEL, data=DATA, **SETTINGS
    )
    return root, results, workdir


def test_api_finetune_returns_the_results_and_the_workdir(by_api):
    root, results, workdir = by_api
    assert workdir == root / "ft"
    assert json.loads(json.dumps(results)) == json.loads((workdir / "results.json").read_text())
    assert results["dataset"] == "csv" and results["tasks"] == ["logS", "esol"]
    assert results["skipped"] == {"invalid_smiles": 1} and np.isfinite(results["test_mean"])


def test_api_refuses_a_setting_the_config_lacks(tmp_path):
    with pytest.raises(UserError, match="epoch: not a fine-tuning setting"):
        api.finetune(tmp_path, tmp_path / "mine.csv", epoch=1)


def test_finetune_and_predict_through_the_command_match_the_api(by_api, tmp_path):
    root, results, _ = by_api
    workdir = tmp_path / "ft"
    run = moleblend("finetune", *_config_flags(root / "mine.csv"), f"--workdir={workdir}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((workdir / "results.json").read_text())["test_mean"] == pytest.approx(
        results["test_mean"], rel=1e-5
    )

    pd.DataFrame({"smiles": NEW}).to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "pred.csv"
    run = moleblend("predict", f"--workdir={workdir}", f"--input={tmp_path / 'new.csv'}",
                    f"--out={out}", "--workers=1")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == f"wrote {out}: 3 rows (1 could not be featurised)"
    by_command = pd.read_csv(out, keep_default_na=False)
    table = api.Predictor.load(workdir).predict(NEW)
    assert list(table.columns) == list(by_command.columns)
    assert table["id"].tolist() == by_command["id"].astype(str).tolist() == ["0", "1", "2"]
    assert table["error"].tolist()[0] == "" and table["error"][1].startswith("invalid_smiles")
    for task in ("logS", "esol"):
        valid = table[task].to_numpy()[[0, 2]]
        assert np.isfinite(valid).all() and np.isnan(table[task][1])
        np.testing.assert_allclose(valid, by_command[task].to_numpy()[[0, 2]].astype(float))


def test_api_predictor_refuses_when_no_smiles_is_valid(by_api):
    with pytest.raises(UserError, match="no valid molecules"):
        api.Predictor.load(by_api[2]).predict(["not a molecule"])
