"""What a pretraining workdir holds besides checkpoints and metrics: the config it was started
with (config.json), checked on every resume, and the lock of the process training in it; and
what they say about a finished run's budget (`pretraining_budget`, for fine-tuning results)."""

import contextlib
import fcntl
import json
import logging
import os
import socket

import ml_collections
from etils import epath

from moleblend_jax import atomic
from moleblend_jax.errors import UserError
from moleblend_jax.train.paths import is_local

CONFIG_FILE = "config.json"
LOCK_FILE = "lock"
# A resumed run must read the same batches into the same model: these keys may not change.
# Anything else (total_steps, the learning rate, logging) may, and the change is logged.
FIXED_PREFIXES = ("model.", "data.", "batch_size")
FREE_KEYS = ("data.num_prep_workers",)  # Does not change a shard's bytes.


def flat_config(config: ml_collections.ConfigDict) -> dict:
    """The resolved config as JSON values (tuples as lists), keyed by dotted name."""
    tree = json.loads(json.dumps(config.copy_and_resolve_references().to_dict()))
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[prefix + key] = value

    walk(tree, "")
    return flat


def config_diff(saved: dict, current: dict) -> dict[str, tuple]:
    """Dotted key -> (saved value, current value) where two flat configs differ (None: absent)."""
    keys = sorted(set(saved) | set(current))
    return {k: (saved.get(k), current.get(k)) for k in keys if saved.get(k) != current.get(k)}


def _is_fixed(key: str) -> bool:
    return key not in FREE_KEYS and key.startswith(FIXED_PREFIXES)


def describe_diff(diff: dict[str, tuple]) -> str:
    """'key: old -> new; ...' for a `config_diff`."""
    return "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in diff.items())


def check_config(
    workdir: epath.Path, config: ml_collections.ConfigDict, resuming: bool, write: bool = True
) -> None:
    """A fresh run saves its resolved config as WORKDIR/config.json; a resumed one is compared
    with it and leaves it as it is (the config of the first start): a changed model, data or
    batch size is a UserError listing the changed keys, other changes are logged (a new
    total_steps is a normal continuation). `write`: this process writes the file (process 0)."""
    path = workdir / CONFIG_FILE
    current = flat_config(config)
    resumed = resuming and path.exists()
    if resumed:
        diff = config_diff(json.loads(path.read_text()), current)
        fixed = {k: v for k, v in diff.items() if _is_fixed(k)}
        if fixed:
            raise UserError(
                f"{workdir} holds a run started with another config ({path}): "
                f"{describe_diff(fixed)}; resume with that config, or use a new --workdir"
            )
        if diff:
            logging.warning("Resuming %s with a changed config: %s", workdir, describe_diff(diff))
    if write and not resumed:
        atomic.write_json(path, current, sort_keys=True)


@contextlib.contextmanager
def locked(workdir: epath.Path, enabled: bool = True):
    """Holds an exclusive lock on `workdir` (WORKDIR/lock, holding the pid and host) while the
    block runs; a second run on the same workdir gets a UserError naming the holder. The kernel
    drops the lock when its process dies, so a killed run never leaves a stale one. Only local
    workdirs can be locked (others are logged); `enabled`: this process locks (process 0)."""
    if not enabled or not is_local(workdir):
        if enabled:
            logging.warning("%s is not local: not locked against a second run.", workdir)
        yield
        return
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = json.loads(handle.read() or "{}")
            raise UserError(
                f"{workdir} is in use by another run (pid {holder.get('pid')} on host "
                f"{holder.get('host')}, lock {path}); wait for it to finish or use another "
                "--workdir"
            ) from None
        handle.truncate(0)
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pretraining_budget(checkpoints: str | os.PathLike) -> dict:
    """A pretraining run's budget, for fine-tuning results (compare.py's protocol notes):
    `pretrain_steps` (the newest checkpoint's step), `pretrain_batch` and `pretrain_molecules`
    (the training shards' num_written), each where WORKDIR/config.json and the shards' metadata
    say it; `checkpoints` is WORKDIR/checkpoints. {} for a checkpoint without a workdir (an
    imported one)."""
    from moleblend_jax.data.reader import read_metadata
    from moleblend_jax.train import checkpoint
    from moleblend_jax.train.inputs import default_train_dir

    checkpoints = epath.Path(checkpoints)
    workdir = checkpoints.parent
    path = workdir / CONFIG_FILE
    if not path.exists():
        return {}
    config = json.loads(path.read_text())
    budget = {"pretrain_steps": checkpoint.latest_step(checkpoints)}
    budget["pretrain_batch"] = config.get("batch_size")
    source = str(config.get("data.default_source"))
    data_dir = config.get("data.dir") or default_train_dir(workdir, source)
    metadata = read_metadata(data_dir)
    if metadata is not None:
        budget["pretrain_molecules"] = metadata.get("num_written")
    return budget
