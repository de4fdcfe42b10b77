"""A finished pretraining run's budget, read from its workdir, for fine-tuning results."""

import json
import os

from etils import epath

from moleblend_jax.train.workdir import CONFIG_FILE


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
