"""A validation-only hyperparameter search over fine-tuning (Optuna, in process).

Each trial fine-tunes one point of the space (`configs/sweep.py`) for `trial_seeds` seeds in
its own workdir and is scored by the seeds' mean best validation metric; test is neither
computed nor logged in a trial (`protocol.run(score_test=False)`). A median pruner stops a
trial whose validation metric, reported after every epoch, falls behind the other trials' at
the same epoch. When the trials are done, the best trial's settings are fine-tuned for
`config.num_seeds` seeds and only that run is scored on test. The original (MoleBLEND's
wandb sweeps) selected on test instead.

Layout of the sweep's workdir:
  DIR/sweep.db             the Optuna study (SQLite): a killed sweep resumes from it
  DIR/lock                 held while the sweep runs
  DIR/data/<dataset>       the shards, built once for every trial
  DIR/trials/trial_<n>     trial n's fine-tuning workdir (results.json without test)
  DIR/final                the chosen settings' run, scored on test
  DIR/results.json         the chosen trial, its parameters, every trial, the final scores

A rerun with the same config resumes: finished trials are kept, a trial a kill left running
is marked failed ("interrupted") and its parameters tried again, and the sweep runs until
`n_trials` trials have finished (completed, pruned or failed by a non-finite loss).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable

import ml_collections
import numpy as np

from moleblend_jax import atomic
from moleblend_jax.errors import UserError
from moleblend_jax.finetune import metrics, protocol, task_data
from moleblend_jax.finetune import workdir as workdir_lib
from moleblend_jax.train.finite import NonFiniteError
from moleblend_jax.train.lock import locked
from moleblend_jax.train.paths import as_path
from moleblend_jax.train.workdir import FREE_KEYS, config_diff, describe_diff, flat_config

DB_FILE = "sweep.db"
STUDY_NAME = "moleblend-sweep"
TRIALS_DIR = "trials"
FINAL_DIR = "final"
RESULTS_FILE = "results.json"
DATA_DIR = "data"
# Pruner steps: seed k's epoch e is step k * SEED_STRIDE + e, so each seed's epochs are
# compared with the same seed's epochs of other trials.
SEED_STRIDE = 1000
INTERRUPTED = "interrupted"  # results.json: a trial a kill left running (another retries it).
RETRY_OF = "retry_of"


def import_optuna():
    """optuna, or a one-line UserError saying how to install it."""
    try:
        import optuna  # noqa: PLC0415 - an optional dependency (the `sweep` extra).
    except ImportError:
        raise UserError(
            "moleblend sweep needs Optuna: pip install 'moleblend-jax[sweep]' (or optuna)"
        ) from None
    return optuna


# ---------------------------------------------------------------- the space
def check_space(space: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> None:
    """UserError for an entry that names no config field or is neither choices nor a range."""
    if not space or not len(space):
        raise UserError("the search space is empty")
    for name, entry in space.items():
        where = f"space.{name}"
        field = entry.get("field")
        if not field or _get(config, field) is _MISSING:
            raise UserError(f"{where}.field={field!r} is not a field of the fine-tuning config")
        choices, low, high = entry.get("choices"), entry.get("low"), entry.get("high")
        if choices is not None:
            if not len(choices):
                raise UserError(f"{where}.choices is empty")
        elif low is None or high is None or not low <= high:
            raise UserError(f"{where}: give choices, or low <= high (got {low!r}, {high!r})")
        elif entry.get("log") and low <= 0:
            raise UserError(f"{where}: a log range needs low > 0 (got {low!r})")
        elif isinstance(_get(config, field), int) and not (
            isinstance(low, int) and isinstance(high, int)
        ):
            raise UserError(f"{where}: config.{field} is an integer; give integer low and high")


_MISSING = object()


def _get(config, dotted: str):
    node = config
    for key in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def suggest(trial, space: ml_collections.ConfigDict) -> dict:
    """One point of `space` from an Optuna trial: name -> value."""
    params = {}
    for name, entry in space.items():
        if entry.get("choices") is not None:
            params[name] = trial.suggest_categorical(name, list(entry.choices))
        elif isinstance(entry.low, int) and isinstance(entry.high, int):
            params[name] = trial.suggest_int(
                name, entry.low, entry.high, log=bool(entry.get("log"))
            )
        else:
            params[name] = trial.suggest_float(
                name, float(entry.low), float(entry.high), log=bool(entry.get("log"))
            )
    return params


def with_params(
    config: ml_collections.ConfigDict, space: ml_collections.ConfigDict, params: dict
) -> ml_collections.ConfigDict:
    """A copy of `config` with each parameter written to its space entry's field."""
    config = config.copy_and_resolve_references()
    for name, value in params.items():
        *parents, leaf = space[name].field.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[leaf] = value
    return config


# ---------------------------------------------------------------- the study
def _study_attrs(config, space, trial_seeds: int) -> dict:
    return {
        "config": flat_config(config),
        "space": json.loads(json.dumps(space.to_dict())),
        "trial_seeds": trial_seeds,
    }


def open_study(workdir, config, space, trial_seeds: int, metric: str):
    """The study in WORKDIR/sweep.db, created or loaded; a sweep of another config (but for
    `train.workdir.FREE_KEYS`, such as the number of data workers), space or seed count in
    the same file is a UserError listing the differences."""
    optuna = import_optuna()
    higher_is_better = metrics.HIGHER_IS_BETTER[metric]
    study = optuna.create_study(
        storage=f"sqlite:///{os.path.abspath(workdir / DB_FILE)}",
        study_name=STUDY_NAME,
        load_if_exists=True,
        direction="maximize" if higher_is_better else "minimize",
        pruner=optuna.pruners.MedianPruner(n_warmup_steps=config.warmup_epochs),
    )
    # Optuna keeps no sampler state in the file: a resumed sweep seeded as the first one was
    # would draw the first trials' parameters again, so the seed moves on by the trials stored.
    study.sampler = optuna.samplers.TPESampler(seed=config.seed + len(study.trials))
    attrs = _study_attrs(config, space, trial_seeds)
    if not study.user_attrs:
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        return study
    saved = study.user_attrs
    diff = config_diff(saved["config"], attrs["config"])
    diff = {key: change for key, change in diff.items() if key not in FREE_KEYS}
    if diff or saved["space"] != attrs["space"] or saved["trial_seeds"] != trial_seeds:
        changes = describe_diff(diff) or "the space or --trial_seeds"
        raise UserError(
            f"{workdir / DB_FILE} holds a sweep of other settings ({changes}); rerun with its "
            "settings to resume it, or use another --workdir"
        )
    return study


def requeue_interrupted(study, workdir) -> int:
    """Trials a killed sweep left RUNNING (the sweep's lock is held, so none runs): marked
    failed, their trial directory removed, and their parameters enqueued to be tried again
    with the RETRY_OF attribute naming them (which is what marks them interrupted). Returns
    how many."""
    optuna = import_optuna()
    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        shutil.rmtree(trial_dir(workdir, trial.number), ignore_errors=True)
        study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
        logging.warning("Trial %d was interrupted; its parameters go again.", trial.number)
    return len(stale)


def interrupted_numbers(trials) -> set[int]:
    """Numbers of the trials a kill interrupted: those another trial retries."""
    return {t.user_attrs[RETRY_OF] for t in trials if RETRY_OF in t.user_attrs}


def finished_trials(study) -> list:
    """Trials that count towards n_trials: completed, pruned, or failed on their own."""
    optuna = import_optuna()
    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    interrupted = interrupted_numbers(trials)
    return [
        t
        for t in trials
        if t.state in (state.COMPLETE, state.PRUNED)
        or (t.state == state.FAIL and t.number not in interrupted)
    ]


def trial_dir(workdir, number: int):
    return as_path(workdir) / TRIALS_DIR / f"trial_{number:04d}"


def _pruning_hook(trial, first_seed: int) -> Callable[[int, int, float], None]:
    """The fine-tuning loop's per-epoch hook: reports the validation metric, prunes."""
    optuna = import_optuna()

    def on_epoch(seed: int, epoch: int, valid: float) -> None:
        if not np.isfinite(valid):
            return
        step = (seed - first_seed) * SEED_STRIDE + epoch
        trial.report(float(valid), step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"seed {seed} epoch {epoch}: valid {valid:.4f}")

    return on_epoch


def _objective(config, space, workdir, trial_seeds: int):
    data_root = as_path(workdir) / DATA_DIR

    def objective(trial) -> float:
        params = suggest(trial, space)
        trial_config = with_params(config, space, params)
        trial_config.num_seeds = trial_seeds
        results = protocol.run(
            trial_config,
            trial_dir(workdir, trial.number),
            score_test=False,
            on_epoch=_pruning_hook(trial, config.seed),
            data_root=data_root,
        )
        trial.set_user_attr("valid_per_seed", [s["valid"] for s in results["seeds"]])
        trial.set_user_attr("best_epochs", [s["best_epoch"] for s in results["seeds"]])
        return results["valid_mean"]

    return objective


# ---------------------------------------------------------------- the sweep
def _trial_rows(study) -> list[dict]:
    trials = study.get_trials(deepcopy=False)
    interrupted = interrupted_numbers(trials)
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "valid": t.value,
            **({INTERRUPTED: True} if t.number in interrupted else {}),
            **({RETRY_OF: t.user_attrs[RETRY_OF]} if RETRY_OF in t.user_attrs else {}),
        }
        for t in trials
    ]


def run(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    n_trials: int,
    space: ml_collections.ConfigDict,
    *,
    timeout: float | None = None,
    trial_seeds: int | None = None,
) -> dict:
    """Searches `space` for `config.dataset` until `n_trials` trials have finished (or
    `timeout` seconds of this call's search have passed), then fine-tunes the best trial's
    settings for config.num_seeds seeds and scores that run on test. Returns and writes
    DIR/results.json (module docstring)."""
    if n_trials < 1:
        raise UserError(f"--n_trials={n_trials}; give at least 1")
    optuna = import_optuna()
    workdir = as_path(workdir)
    config = config.copy_and_resolve_references()
    protocol.validate_config(config)
    check_space(space, config)
    trial_seeds = trial_seeds or config.num_seeds
    metric = task_data.dataset_source(config)[1].metric  # Reads a user file's task type.
    with locked(workdir):
        study = open_study(workdir, config, space, trial_seeds, metric)
        requeue_interrupted(study, workdir)
        remaining = n_trials - len(finished_trials(study))
        if remaining > 0:
            study.optimize(
                _objective(config, space, workdir, trial_seeds),
                n_trials=remaining,
                timeout=timeout,
                catch=(NonFiniteError,),
                gc_after_trial=True,
            )
        complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            raise UserError(
                f"no trial of the sweep in {workdir} completed ({len(study.trials)} tried); see "
                "the log and DIR/trials"
            )
        return _finish(config, space, workdir, study, metric, n_trials)


def _final_run(config, space, workdir, best) -> dict:
    """The chosen settings fine-tuned for config.num_seeds seeds in DIR/final, scored on
    test; a finished final run of the same settings is reused (a resumed, finished sweep)."""
    final_config = with_params(config, space, best.params)
    final_dir = workdir / FINAL_DIR
    done = final_dir / workdir_lib.RESULTS_FILE
    if done.exists():
        previous = json.loads(done.read_text())
        if previous.get("config") == json.loads(json.dumps(final_config.to_dict())):
            logging.info("%s already holds trial %d's final run.", final_dir, best.number)
            return previous
    return protocol.run(final_config, final_dir, data_root=workdir / DATA_DIR)


def _finish(config, space, workdir, study, metric: str, n_trials: int) -> dict:
    """Runs (or reuses) the final run of the chosen trial and writes DIR/results.json."""
    best = study.best_trial
    final = _final_run(config, space, workdir, best)
    counts = {}
    for row in _trial_rows(study):
        counts[row["state"].lower()] = counts.get(row["state"].lower(), 0) + 1
    results = {
        "dataset": final["dataset"],
        "metric": metric,
        "higher_is_better": final["higher_is_better"],
        "chosen_trial": best.number,
        "params": best.params,
        "valid_objective": best.value,
        "test_seen_during_search": False,
        "protocol": (
            "each trial fine-tuned on train and was scored on valid only (test neither "
            "computed nor logged); the chosen trial's settings were then fine-tuned for "
            "config.num_seeds seeds in final/, the only run scored on test"
        ),
        "n_trials": n_trials,
        "trial_counts": counts,
        "space": space.to_dict(),
        "final_workdir": os.fspath(workdir / FINAL_DIR),
        "test_mean": final["test_mean"],
        "test_std": final["test_std"],
        "valid_mean": final["valid_mean"],
        "valid_std": final["valid_std"],
        "num_seeds": len(final["seeds"]),
        "trials": _trial_rows(study),
    }
    results = json.loads(json.dumps(results))  # Tuples of the space as lists.
    atomic.write_json(workdir / RESULTS_FILE, results, indent=2)
    return results
