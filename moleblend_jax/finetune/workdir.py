"""A fine-tuning workdir holds one consistent run, switched atomically when a run finishes.

Layout:
  WORKDIR/lock                 the process fine-tuning in it (`train.lock.locked`)
  WORKDIR/runs/<run_id>/       one run: config.json (its resolved config and the data file's
                               sha256), metrics.jsonl, tensorboard/, split_<kind>_seed<k>.json,
                               checkpoints/seed_<k> (each with a RUN_ID file), results.json and
                               predictor.json (both carrying `run_id`)
  WORKDIR/current              a symlink to runs/<run_id>: the committed run, replaced with
                               `os.replace` as a run's very last step
  WORKDIR/<name> -> current/<name>
                               for config.json, predictor.json, results.json, metrics.jsonl,
                               tensorboard, checkpoints and the split files: the committed run's
                               files at the paths README names
  WORKDIR/data/<dataset>       the shards (a cache shared by runs; rebuilt when the data change)

A run writes only in its own runs/<run_id>, so a run killed at any point leaves the committed
run complete; the next run (under the lock) deletes the leftover. A workdir written before
this layout (real files at the top) is moved into runs/legacy when a new run starts there, and
loads as it is before that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import time

import ml_collections
from etils import epath

from moleblend_jax import atomic
from moleblend_jax.data import unimol_lmdb
from moleblend_jax.errors import UserError
from moleblend_jax.train.paths import as_path, is_local
from moleblend_jax.train.workdir import CONFIG_FILE, config_diff, describe_diff, flat_config

RUNS_DIR = "runs"
CURRENT = "current"
LEGACY_RUN = "legacy"
RUN_ID_FILE = "RUN_ID"  # In each seed's checkpoint directory.
PREDICTOR_FILE = "predictor.json"
RESULTS_FILE = "results.json"
# The committed run's entries shown at the top of the workdir (besides its split files).
# predictor.json first: a legacy workdir being moved stops looking like one before anything
# else moves.
LINKED = (PREDICTOR_FILE, RESULTS_FILE, CONFIG_FILE, "metrics.jsonl", "tensorboard", "checkpoints")
SPLIT_GLOB = "split_*.json"
# What makes a run's numbers: a rerun that changes one of these is refused unless
# config.overwrite (any other change, such as the learning rate, is logged).
DATA_KEYS = (
    "dataset",
    "dataset_path",
    "dataset_sha256",
    "smiles_column",
    "label_columns",
    "task_type",
    "id_column",
    "split_column",
    "split",
    "split_file",
    "max_molecules",
    "modality",
    "data.max_atoms",
)


def new_run_id() -> str:
    """A sortable, unique run id: start time and 6 random hex digits."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def dataset_sha256(path: str | os.PathLike | None) -> str | None:
    """The hash of a data file, or of a Uni-Mol directory's three LMDB files (their names and
    hashes); None for bundled data."""
    if path and os.path.isfile(path):
        return atomic.file_sha256(path)
    if path and os.path.isdir(path):
        names = [n for n in unimol_lmdb.FILE_OF_PART.values() if os.path.isfile(f"{path}/{n}")]
        listing = [(name, atomic.file_sha256(os.path.join(path, name))) for name in names]
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest() if listing else None
    return None


def run_config(config: ml_collections.ConfigDict) -> dict:
    """The flat config a run records (`train.workdir.flat_config`) plus `dataset_sha256`
    (`dataset_sha256`)."""
    flat = flat_config(config)
    flat["dataset_sha256"] = dataset_sha256(config.dataset_path)
    return flat


def committed_dir(workdir: str | os.PathLike) -> epath.Path | None:
    """The directory of the committed run (runs/<run_id>, or WORKDIR itself for a workdir
    written before this layout); None when WORKDIR holds no finished run."""
    workdir = as_path(workdir)
    current = workdir / CURRENT
    if os.path.islink(current):
        return workdir / RUNS_DIR / os.path.basename(os.readlink(current))
    if (workdir / PREDICTOR_FILE).is_file():
        return workdir
    return None


def _move_legacy_run(workdir: epath.Path) -> None:
    """Moves a workdir written before this layout into runs/legacy (resumable: each step
    checks what is done) and commits it."""
    top = workdir / PREDICTOR_FILE
    legacy = workdir / RUNS_DIR / LEGACY_RUN
    if os.path.islink(workdir / CURRENT):
        return
    if not (top.is_file() and not os.path.islink(top)) and not legacy.is_dir():
        return  # Neither a legacy run nor one being moved.
    logging.info("Moving the run in %s (written before runs/) to %s.", workdir, legacy)
    legacy.mkdir(parents=True, exist_ok=True)
    names = [*LINKED, *(p.name for p in workdir.glob(SPLIT_GLOB))]
    for name in names:
        entry = workdir / name
        if entry.exists() and not os.path.islink(entry):
            os.replace(entry, legacy / name)
    _point_current(workdir, LEGACY_RUN)


def _point_current(workdir: epath.Path, run_id: str) -> None:
    """Switches WORKDIR/current to runs/<run_id> in one rename, then links the top-level names
    to it (links to the run before that it lacks are removed)."""
    tmp = workdir / f".{CURRENT}.{os.getpid()}.tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(os.path.join(RUNS_DIR, run_id), tmp)
    os.replace(tmp, workdir / CURRENT)
    run_dir = workdir / RUNS_DIR / run_id
    names = {*LINKED, *(p.name for p in run_dir.glob(SPLIT_GLOB))}
    for name in sorted(names):
        link, target = workdir / name, os.path.join(CURRENT, name)
        if os.path.islink(link) and os.readlink(link) == target:
            continue
        if link.is_dir() and not os.path.islink(link):  # Left by an earlier version's run.
            shutil.rmtree(link)
        tmp = workdir / f".{name}.{os.getpid()}.tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    for link in workdir.glob(SPLIT_GLOB):
        if os.path.islink(link) and not link.exists():
            os.unlink(link)


def check_rerun(workdir: epath.Path, current: dict, overwrite: bool) -> None:
    """A rerun on other data than the committed run (`DATA_KEYS`) is a UserError listing the
    changed keys, unless `overwrite`; other changes are logged."""
    run_dir = committed_dir(workdir)
    path = run_dir / CONFIG_FILE if run_dir is not None else None
    if path is None or not path.exists():
        return
    diff = config_diff(json.loads(path.read_text()), current)
    for key in ("overwrite", "run_id"):
        diff.pop(key, None)
    data = {k: v for k, v in diff.items() if k in DATA_KEYS}
    if data and not overwrite:
        raise UserError(
            f"{workdir} holds a run on other data ({workdir / CONFIG_FILE}): "
            f"{describe_diff(data)}; rerun with --config.overwrite=true to replace it, or use "
            "a new --workdir"
        )
    if diff:
        logging.warning("Replacing the run in %s; changed: %s", workdir, describe_diff(diff))


def start_run(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> epath.Path:
    """Under the workdir's lock: moves a legacy run, checks the rerun (`check_rerun`), deletes
    runs that never finished, and creates runs/<new id> holding the run's config.json.
    Returns the new run's directory."""
    workdir = as_path(workdir)
    if not is_local(workdir):
        raise UserError(
            f"--workdir={workdir}: a fine-tuning workdir must be local (its runs are switched "
            "with a symlink); copy it to the bucket afterwards"
        )
    _move_legacy_run(workdir)
    current = run_config(config)
    check_rerun(workdir, current, bool(config.get("overwrite", False)))
    committed = committed_dir(workdir)
    for stale in sorted((workdir / RUNS_DIR).glob("*")):
        if stale != committed:
            logging.info("Deleting %s (a run that did not finish).", stale)
            shutil.rmtree(stale, ignore_errors=True)
    run_id = new_run_id()
    run_dir = workdir / RUNS_DIR / run_id
    run_dir.mkdir(parents=True)
    atomic.write_json(run_dir / CONFIG_FILE, {**current, "run_id": run_id}, sort_keys=True)
    logging.info("Run %s: writing to %s (committed at the end).", run_id, run_dir)
    return run_dir


def commit(run_dir: str | os.PathLike) -> None:
    """Makes a finished run (every file written) the workdir's committed run, then deletes the
    run before it."""
    run_dir = as_path(run_dir)
    workdir = run_dir.parent.parent
    before = committed_dir(workdir)
    _point_current(workdir, run_dir.name)
    if before is not None and before != run_dir and before != workdir:
        shutil.rmtree(before, ignore_errors=True)


def run_id_of(run_dir: str | os.PathLike) -> str:
    return as_path(run_dir).name


def write_seed_run_id(checkpoint_dir: str | os.PathLike, run_id: str) -> None:
    atomic.write_text(as_path(checkpoint_dir) / RUN_ID_FILE, run_id + "\n")


def read_seed_run_id(checkpoint_dir: str | os.PathLike) -> str | None:
    path = as_path(checkpoint_dir) / RUN_ID_FILE
    return path.read_text().strip() if path.exists() else None
