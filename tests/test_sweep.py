"""The validation-only hyperparameter search (finetune/sweep.py): trials never see test, the
chosen trial is retrained and scored on test, a killed sweep resumes from its SQLite study."""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import ml_collections
import pytest

from moleblend_jax.configs import finetune as finetune_configs
from moleblend_jax.configs import sweep as sweep_configs
from moleblend_jax.errors import UserError
from moleblend_jax.finetune import sweep

optuna = pytest.importorskip("optuna")  # The sweep extra (CI installs it).

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_MODEL = dict(num_layers=2, hidden_dim=32, ffn_dim=32, num_heads=4, num_kernels=16)
QUICK = dict(dataset="esol", max_molecules=60, warmup_epochs=0, num_seeds=2)


def _config():
    config = finetune_configs.get_config("tiny")
    config.model.update(SMALL_MODEL)
    config.update(QUICK)
    config.data.buckets, config.data.max_atoms, config.data.num_prep_workers = (32,), 32, 1
    return config


def _space(epochs=(1, 2)):
    """The default space's rates, a batch every device count divides, very few epochs."""
    space = sweep_configs.get_config()
    space.batch_size.choices = (32,)
    space.epochs.choices = epochs
    return space


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _study(workdir):
    return optuna.load_study(
        study_name=sweep.STUDY_NAME, storage=f"sqlite:///{workdir / sweep.DB_FILE}"
    )


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sweep")
    results = sweep.run(_config(), workdir, n_trials=3, space=_space(), trial_seeds=1)
    return workdir, results


def test_the_chosen_trial_is_the_best_on_valid_and_alone_scored_on_test(swept):
    workdir, results = swept
    study = _study(workdir)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value)  # RMSE: lower is better.
    assert results == json.loads((workdir / "results.json").read_text())
    assert results["chosen_trial"] == best.number and results["params"] == best.params
    assert results["valid_objective"] == best.value
    assert results["test_seen_during_search"] is False and results["metric"] == "rmse"
    assert len(results["trials"]) == 3 and results["n_trials"] == 3
    assert {row["number"]: row["params"] for row in results["trials"]} == {
        t.number: t.params for t in study.trials
    }
    # The final run: the chosen settings, the config's 2 seeds, scored on test.
    final = json.loads((workdir / "final" / "results.json").read_text())
    assert final["config"]["epochs"] == best.params["epochs"]
    assert final["config"]["optimizer"]["peak_lr"] == best.params["peak_lr"]
    assert final["config"]["optimizer"]["weight_decay"] == best.params["weight_decay"]
    assert [s["seed"] for s in final["seeds"]] == [0, 1]
    assert (
        results["test_mean"] == final["test_mean"]
        and "test" in _lines(workdir / "final" / "metrics.jsonl")[0]
    )
    # The shards were built once, beside the trials.
    assert (workdir / "data" / "esol" / "metadata.json").exists()
    assert not (workdir / "final" / "data").exists()


def test_trials_never_compute_or_log_test(swept):
    workdir, _ = swept
    study = _study(workdir)
    for trial in study.trials:
        trial_dir = sweep.trial_dir(workdir, trial.number)
        results = json.loads((trial_dir / "results.json").read_text())
        assert not [key for key in json.dumps(results["seeds"]).split('"') if "test" in key]
        assert "test_mean" not in results and "test_per_task_mean" not in results
        lines = _lines(trial_dir / "metrics.jsonl")
        assert len(lines) == trial.params["epochs"] and all("test" not in line for line in lines)
        # The objective is the seeds' mean best validation metric, reported epoch by epoch.
        assert trial.value == results["valid_mean"] == min(line["valid"] for line in lines)
        assert trial.intermediate_values == {i + 1: line["valid"] for i, line in enumerate(lines)}
        assert results["config"]["num_seeds"] == 1


def test_a_finished_sweep_reruns_nothing_and_another_config_is_refused(swept):
    workdir, results = swept
    stamp = (workdir / "final" / "results.json").stat().st_mtime
    again = sweep.run(_config(), workdir, n_trials=3, space=_space(), trial_seeds=1)
    assert again["chosen_trial"] == results["chosen_trial"] and len(again["trials"]) == 3
    assert (workdir / "final" / "results.json").stat().st_mtime == stamp
    other = _config()
    other.max_molecules = 50
    with pytest.raises(UserError, match=r"sweep.db holds a sweep of other settings \(max_mol"):
        sweep.run(other, workdir, n_trials=3, space=_space(), trial_seeds=1)


def test_the_timeout_stops_starting_trials(tmp_path):
    config = _config()
    config.num_seeds = 1
    results = sweep.run(config, tmp_path, n_trials=5, space=_space(epochs=(1,)), timeout=1e-3)
    assert [row["number"] for row in results["trials"]] == [0]  # One trial, then no more.
    assert results["n_trials"] == 5 and results["chosen_trial"] == 0
    assert (tmp_path / "final" / "results.json").exists()


def test_a_space_naming_no_config_field_is_refused(tmp_path):
    space = _space()
    space.warmup = dict(field="optimizer.warmup", low=1, high=3)
    with pytest.raises(UserError, match=r"space.warmup.field='optimizer.warmup' is not a field"):
        sweep.run(_config(), tmp_path, n_trials=1, space=space)
    space = ml_collections.ConfigDict(dict(lr=dict(field="optimizer.peak_lr", low=0.0, high=1.0)))
    space.lr.log = True
    with pytest.raises(UserError, match="a log range needs low > 0"):
        sweep.run(_config(), tmp_path, n_trials=1, space=space)
    space = ml_collections.ConfigDict(dict(epochs=dict(field="epochs", low=1.0, high=3.0)))
    with pytest.raises(UserError, match="config.epochs is an integer; give integer low and high"):
        sweep.run(_config(), tmp_path, n_trials=1, space=space)
    with pytest.raises(UserError, match="--n_trials=0; give at least 1"):
        sweep.run(_config(), tmp_path, n_trials=0, space=_space())
    assert not (tmp_path / sweep.DB_FILE).exists()  # Refused before any study.


def test_a_missing_optuna_is_one_line_saying_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError.
    with pytest.raises(UserError, match=r"needs Optuna: pip install 'moleblend-jax\[sweep\]'"):
        sweep.import_optuna()


# Enough epochs that trial 1 runs, past its first epoch, for longer than a poll of the study
# takes: 4 epochs of 2 steps each last 0.6 s on an idle machine, and the kill missed them.
KILL_EPOCHS = 16


def _study_created(workdir):
    """Whether the sweep's study row exists, read with plain sqlite3: opening the study through
    Optuna while the sweep is still creating its schema races it to stamp the schema version."""
    try:
        uri = f"file:{workdir / sweep.DB_FILE}?mode=ro"  # Read-only: never creates the file.
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            return db.execute("SELECT COUNT(*) FROM studies").fetchone()[0] > 0
    except sqlite3.OperationalError:  # No file, no table or a write lock: not yet.
        return False


def _sweep_command(workdir, n_trials):
    config = [f"--config.{key}={value}" for key, value in QUICK.items()]
    config += [f"--config.model.{key}={value}" for key, value in SMALL_MODEL.items()]
    config += ["--config.data.buckets=(32,)", "--config.data.max_atoms=32"]
    config += ["--config.data.num_prep_workers=1"]
    space = ["--space.batch_size.choices=(32,)", f"--space.epochs.choices=({KILL_EPOCHS},)"]
    return [
        sys.executable,
        os.path.join(REPO, "experiments", "sweep.py"),
        "--config=configs/finetune.py:tiny",
        *config,
        *space,
        f"--workdir={workdir}",
        f"--n_trials={n_trials}",
        "--trial_seeds=1",
    ]


def test_a_sweep_killed_mid_trial_resumes_where_it_stopped(tmp_path):
    """kill -9 during trial 1's fine-tuning (after its first epoch), then rerun: trial 0 is
    kept as it was, trial 1 is marked interrupted and its parameters run again, and the
    sweep goes on until 3 trials have finished."""
    workdir = tmp_path / "sweep"
    env = dict(os.environ, PYTHONPATH=REPO)
    process = subprocess.Popen(
        _sweep_command(workdir, 3), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    killed_trial, deadline = None, time.monotonic() + 400
    try:
        while killed_trial is None and time.monotonic() < deadline:
            time.sleep(0.1)
            assert process.poll() is None, process.stderr.read()[-3000:]
            if not _study_created(workdir):
                continue
            trials = _study(workdir).trials
            running = [t for t in trials if t.state.name == "RUNNING" and t.intermediate_values]
            if running and running[0].number == 1:
                killed_trial = running[0]
                process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert killed_trial is not None, "trial 1 never reported an epoch"
    before = {t.number: (t.state.name, t.value, t.params) for t in _study(workdir).trials}
    assert before[0][0] == "COMPLETE" and before[1][0] == "RUNNING"

    space = _space(epochs=(KILL_EPOCHS,))
    resumed = sweep.run(_config(), workdir, n_trials=3, space=space, trial_seeds=1)
    trials = {t.number: t for t in _study(workdir).trials}
    assert (trials[0].state.name, trials[0].value, trials[0].params) == before[0]
    assert trials[1].state.name == "FAIL" and sweep.interrupted_numbers(trials.values()) == {1}
    assert not sweep.trial_dir(workdir, 1).exists()
    assert trials[2].user_attrs[sweep.RETRY_OF] == 1 and trials[2].params == trials[1].params
    assert len(sweep.finished_trials(_study(workdir))) == 3
    # The median pruner starts after 5 trials: none is pruned here.
    assert sorted(trials) == [0, 1, 2, 3] and trials[3].state.name == "COMPLETE"
    # The resumed sampler draws anew: not trial 0's parameters again, as a reseeded one would.
    assert trials[3].params != trials[0].params
    assert resumed["trial_counts"] == {"complete": 3, "fail": 1}
    assert [row.get(sweep.INTERRUPTED, False) for row in resumed["trials"]] == [
        False, True, False, False,
    ]  # fmt: skip


def test_the_pruning_hook_reports_each_seeds_epochs_and_prunes_a_lagging_trial():
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    leader = study.ask()
    hook = sweep._pruning_hook(leader, first_seed=3)
    for epoch, valid in enumerate([1.0, 0.9, float("nan")], start=1):
        hook(3, epoch, valid)  # NaN (a metric that cannot be scored) is not reported.
    hook(4, 1, 0.8)
    assert leader.storage.get_trial(leader._trial_id).intermediate_values == {
        1: 1.0, 2: 0.9, sweep.SEED_STRIDE + 1: 0.8,
    }  # fmt: skip
    study.tell(leader, 0.85)
    lagging = study.ask()
    hook = sweep._pruning_hook(lagging, first_seed=3)
    hook(3, 1, 0.95)  # Better than the leader's 1.0 at epoch 1: goes on.
    with pytest.raises(optuna.TrialPruned, match="seed 3 epoch 2: valid 1.5000"):
        hook(3, 2, 1.5)  # Worse than the leader's 0.9 at epoch 2.
