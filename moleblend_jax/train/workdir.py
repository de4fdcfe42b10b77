"""The config a workdir's run was started with (WORKDIR/config.json), checked on every resume.

The workdir's other files: the lock of the process training in it (`train.lock`), checkpoints,
metrics; what they say about a finished run's budget is `train.budget`.
"""

import json
import logging

import ml_collections
from etils import epath

from moleblend_jax import atomic
from moleblend_jax.errors import UserError
from moleblend_jax.schema import RETIRED_MODEL_KEYS

CONFIG_FILE = "config.json"
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
    """Dotted key -> (saved value, current value) where two flat configs differ (None: absent).
    A retired model key saved at its one value (`schema.RETIRED_MODEL_KEYS`) is no difference."""
    retired = {f"model.{key}": fact for key, fact in RETIRED_MODEL_KEYS.items()}
    saved = {k: v for k, v in saved.items() if k not in retired or v != retired[k]}
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
