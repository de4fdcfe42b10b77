"""experiments/compare.py (golden table lines) and experiments/baseline_rf.py (tiny runs; the
same split ids as fine-tuning)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moleblend_jax.configs import finetune as finetune_configs
from moleblend_jax.finetune import splits, task_data

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"

GOLDEN = [
    "| dataset | metric | init | split | seeds | ours (test, mean ± std) | MoleBLEND (SPEC 8) "
    "| ours - MoleBLEND | protocol differences |",
    "|---|---|---|---|---|---|---|---|---|",
    "| bbbp | ROC-AUC % | pretrained: pretrain | scaffold | 3 | 71.4 ± 0.8 | 73.0 | -1.6 "
    "| selected on valid (orig.: tuned on test, 30 trials); pretrained on 100k mols x 20k steps "
    "(orig. 3.38M x 200k) |",
    "| esol | RMSE | scratch | scaffold | 2 | 1.040 ± 0.020 | - | - | no published MoleBLEND "
    "number; no pretraining (random init) |",
]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )


def test_compare_golden_lines(tmp_path):
    out = tmp_path / "table.md"
    results = [DATA / "results_example_esol.json", DATA / "results_example.json"]
    printed = _run("compare.py", *map(str, results), f"--out={out}").stdout
    assert printed.splitlines()[: len(GOLDEN)] == GOLDEN
    assert out.read_text() == printed
    assert "B3DB" in printed and "30 Bayesian-optimisation trials" in printed


def test_compare_marks_b3db_and_averages(tmp_path):
    example = json.loads((DATA / "results_example.json").read_text())
    paths = []
    for name in ("bbbp", "tox21", "toxcast", "sider", "clintox", "muv", "hiv", "bace", "b3db"):
        result = dict(example, dataset=name, test_mean=0.75, config={})
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(result))
        paths.append(str(path))
    lines = _run("compare.py", *paths).stdout.splitlines()
    b3db = next(line for line in lines if line.startswith("| b3db "))
    assert "| (73.0 BBBP) | n/c | not comparable: B3DB is not BBBP;" in b3db
    assert "pretraining budget not recorded" in b3db
    tox21 = next(line for line in lines if line.startswith("| tox21 "))
    assert "| 75.0 ± 0.8 | 77.8 | -2.8 |" in tox21
    avg = next(line for line in lines if line.startswith("| avg "))
    assert "| 75.0 | 76.2 | -1.2 |" in avg


def test_compare_tells_pretraining_runs_apart_and_flags_last_epoch_bests(tmp_path):
    example = json.loads((DATA / "results_example_esol.json").read_text())
    paths = []
    for run in ("blend", "2d"):
        seeds = [dict(s, best_epoch=80) for s in example["seeds"]]
        seeds[0]["best_epoch"] = 12  # One early stop: 1 of 2 seeds best at the last epoch.
        checkpoint = f"workdirs/study/pretrain/{run}/checkpoints"
        result = dict(example, init="pretrained", init_checkpoint=checkpoint, seeds=seeds)
        # finetune.py's record of the checkpoint's run (train/budget.pretraining_budget).
        result["pretrain"] = dict(pretrain_steps=10_000, pretrain_molecules=100_000)
        paths.append(tmp_path / f"{run}.json")
        paths[-1].write_text(json.dumps(result))
    probe = dict(example, init="linear_probe", init_checkpoint="workdirs/study/pretrain/blend")
    paths.append(tmp_path / "probe_blend.json")
    paths[-1].write_text(json.dumps(probe))
    lines = _run("compare.py", *map(str, paths)).stdout.splitlines()
    main_table = lines[: lines.index("")]  # MUBen's reference rows follow, an esol row too.
    rows = [line for line in main_table if line.startswith("| esol ")]
    inits = ["linear_probe: blend", "pretrained: 2d", "pretrained: blend"]
    assert [row.split(" | ")[2] for row in rows] == inits
    assert all("best epoch = last run in 1 of 2 seeds" in row for row in rows[1:])
    assert "frozen graph embeddings" in rows[0]
    assert all("pretrained on 100k mols x 10k steps (orig. 3.38M x 200k)" in r for r in rows[1:])


def test_compare_shows_the_other_metrics_per_task_and_muben_reference_rows():
    from moleblend_jax.finetune import comparison as compare

    example = json.loads((DATA / "results_example.json").read_text())
    scored = {
        "roc_auc": {"mean": 0.75, "std": 0.01, "per_task": {"a": 0.7, "b": 0.8}},
        "prc_auc": {"mean": 0.4, "std": 0.02, "per_task": {"a": 0.3, "b": 0.5}},
    }
    result = dict(
        example, dataset="tox21", init_checkpoint="pretrained:small-moses", test_metrics=scored
    )
    regression = dict(example, dataset="esol", metric="rmse", init="scratch", test_metrics={
        "rmse": {"mean": 1.04, "std": 0.02, "per_task": {"y": 1.04}},
        "mae": {"mean": 0.8, "std": 0.01, "per_task": {"y": 0.8}},
        "r2": {"mean": 0.71234, "std": 0.005, "per_task": {"y": 0.71234}},
        "spearman": {"mean": 0.85, "std": 0.004, "per_task": {"y": 0.85}},
    })  # fmt: skip
    lines = compare.render_markdown([result, regression]).splitlines()
    assert "| dataset | init | task | ROC-AUC % | PRC-AUC % | RMSE | MAE | R² | Spearman |" in lines
    tox21 = [line for line in lines if line.startswith("| tox21 | pretrained: small-moses |")]
    assert tox21 == [  # The mean over tasks first, then each task.
        "| tox21 | pretrained: small-moses | mean over tasks | 75.0 ± 1.0 | 40.0 ± 2.0 | - | - "
        "| - | - |",
        "| tox21 | pretrained: small-moses | a | 70.0 | 30.0 | - | - | - | - |",
        "| tox21 | pretrained: small-moses | b | 80.0 | 50.0 | - | - | - | - |",
    ]
    assert (
        "| esol | scratch | mean over tasks | - | - | 1.040 ± 0.020 | 0.800 ± 0.010 "
        "| 0.712 ± 0.005 | 0.850 ± 0.004 |"
    ) in lines  # One task: no per-task rows.
    assert "| esol | RMSE | 0.853 ± 0.022 | 0.936 ± 0.025 |" in lines
    assert "| tox21 | ROC-AUC % | 78.9 ± 0.2 | 78.1 ± 0.2 |" in lines
    assert any(line.startswith("Reference re-runs, not the papers' numbers") for line in lines)


def test_compare_rejects_incomplete_results(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"dataset": "esol"}))
    with pytest.raises(subprocess.CalledProcessError):
        _run("compare.py", str(path))


def test_baseline_rf_writes_results_format(tmp_path):
    out = tmp_path / "rf.json"
    _run(
        "baseline_rf.py", "--dataset=bbbp", f"--path={DATA / 'moleculenet' / 'bbbp.csv'}",
        "--split=random", "--seeds=0,1", "--n_estimators=5", "--n_jobs=1", f"--out={out}",
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["init"] == "rf_baseline" and result["metric"] == "roc_auc"
    assert result["higher_is_better"] is True and result["init_checkpoint"] is None
    assert [s["seed"] for s in result["seeds"]] == [0, 1]
    keys = {"seed", "best_epoch", "valid", "test", "epochs_run"}
    assert all(keys <= set(s) for s in result["seeds"])
    assert {"test_mean", "test_std", "valid_mean", "valid_std", "config"} <= set(result)
    assert result["config"]["num_molecules"] == 7


def test_baseline_rf_regression_on_bundled_set(tmp_path):
    out = tmp_path / "rf.json"
    _run("baseline_rf.py", "--dataset=freesolv", "--seeds=0", "--n_estimators=10", f"--out={out}")
    result = json.loads(out.read_text())
    assert result["metric"] == "rmse" and result["split"] == "scaffold"
    assert 0.5 < result["test_mean"] < 10.0


def test_baseline_rf_splits_the_records_fine_tuning_splits(tmp_path):
    config = finetune_configs.get_config()
    config.dataset, config.max_molecules, config.data.num_prep_workers = "esol", 60, 1
    data = task_data.load(config, tmp_path / "net")
    network = task_data.seed_split(data, "scaffold", 0, workdir=tmp_path / "net")
    common = ("--dataset=esol", "--max_molecules=60", "--n_estimators=5", "--n_jobs=1")
    out = tmp_path / "rf.json"
    _run("baseline_rf.py", *common, "--seeds=0", f"--workdir={tmp_path / 'rf'}", f"--out={out}")
    made = splits.load_split(tmp_path / "rf" / "split_scaffold_seed0.json")
    assert {name: ids.tolist() for name, ids in made.items()} == network
    assert json.loads(out.read_text())["num_records"] == len(data.records)
    # A split a fine-tuning run saved is read as it is, for every seed, and not written.
    given = tmp_path / "net" / "split_scaffold_seed0.json"
    _run(
        "baseline_rf.py", *common, "--seeds=0,1", f"--split_file={given}",
        f"--workdir={tmp_path / 'rf2'}", f"--out={out}",
    )  # fmt: skip
    assert not list((tmp_path / "rf2").glob("split_*.json"))
    seeds = json.loads(out.read_text())["seeds"]
    assert [s["seed"] for s in seeds] == [0, 1]
