"""Pretraining input: the shard directories a run reads, and their batch iterators.

`prepare_pretraining_data` runs before the training loop. With no `config.data.dir` it builds
shards of the bundled default source once under WORKDIR/data, on process 0, while the other
processes wait at a barrier; every process then checks the directories it will read.
"""

import logging
from typing import NamedTuple

import jax
import ml_collections
from jax.experimental import multihost_utils

from moleblend_jax.errors import UserError
from moleblend_jax.train.paths import as_path, is_local

# Conformer reasons of records without coordinates (chem.conformers.NONE, EMBED_FAILED).
NO_COORDINATES = ("none", "embed_failed")


class PretrainingData(NamedTuple):
    train_dir: str
    eval_dir: str | None  # None: no held-out loss.
    num_oversize: int = 0  # Training molecules above the largest bucket, dropped (opt-in).


def prepare_pretraining_data(config: ml_collections.ConfigDict, workdir: str) -> PretrainingData:
    """The configured shard directories, or default shards built once (see module doc).

    Raises (naming the path) if a directory is missing or corrupt, or holds molecules above
    the largest bucket without `config.data.drop_oversize`.
    """
    from moleblend_jax.data import reader

    data = config.data
    if data.dir:
        dirs = PretrainingData(data.dir, data.eval_dir)
    else:
        dirs = _default_dirs(config, workdir)
        if jax.process_index() == 0:
            _build_default_shards(config, dirs)
        # Processes 1..N must not read the shards while process 0 is still writing them.
        multihost_utils.sync_global_devices("moleblend_default_shards")
    for directory in (dirs.train_dir, dirs.eval_dir):
        if directory is not None:
            reader.shard_paths(directory)  # Raises, naming the path, if missing or corrupt.
    if dirs.eval_dir is not None:
        check_shards(dirs.eval_dir, config.data)
    return dirs._replace(num_oversize=check_shards(dirs.train_dir, config.data))


def check_shards(data_dir: str, data: ml_collections.ConfigDict) -> int:
    """Checks what pretraining would lose silently: molecules of `data_dir` above the largest
    of `data.buckets` are a UserError (the pipeline would skip them) unless
    `data.drop_oversize`, then logged; shards without 3D coordinates are logged (the 3D losses
    would stay 0). -> the count of molecules dropped."""
    from moleblend_jax.data import reader

    metadata = reader.load_metadata(data_dir)
    without = sum(metadata["conformers"].get(reason, 0) for reason in NO_COORDINATES)
    if without:
        logging.warning(
            "%s: %d of %d molecules have no 3D coordinates: their 3D losses are 0 (rebuild "
            "with data_prep/build_shards.py --conformers=rdkit to generate them).",
            data_dir,
            without,
            metadata["num_written"],
        )
    largest_bucket = max(data.buckets)
    count, largest = reader.count_oversize(metadata, largest_bucket)
    if count and not data.drop_oversize:
        raise UserError(
            f"{data_dir}: {count} molecules have more than {largest_bucket} atoms (the largest "
            f"bucket; the largest molecule has {largest}); add a bucket of {largest} to "
            "--config.data.buckets, or drop them with --config.data.drop_oversize=true"
        )
    if count:
        logging.warning(
            "%s: dropping %d molecules above the largest bucket (%d atoms).",
            data_dir,
            count,
            largest_bucket,
        )
    return count


def _default_dirs(config: ml_collections.ConfigDict, workdir: str) -> PretrainingData:
    if not is_local(workdir):
        raise ValueError(
            f"--workdir={workdir} is not local, and default shards are built on local disk: "
            "build shards with data_prep/build_shards.py and set --config.data.dir."
        )
    train_dir = default_train_dir(workdir, config.data.default_source)
    # The held-out set is the source's entries after the training prefix, so it needs a prefix.
    has_default_eval = bool(config.data.max_molecules and config.data.eval_molecules)
    default_eval = str(train_dir.parent / f"{train_dir.name}_eval") if has_default_eval else None
    return PretrainingData(str(train_dir), config.data.eval_dir or default_eval)


def default_train_dir(workdir, source: str):
    """Where a run without data.dir builds its `source` shards: WORKDIR/data/SOURCE."""
    return as_path(workdir) / "data" / source


def _build_default_shards(config: ml_collections.ConfigDict, dirs: PretrainingData) -> None:
    from moleblend_jax.data import shards

    data = config.data
    source = data.default_source
    common = dict(workers=data.num_prep_workers, max_atoms=data.max_atoms)
    if not (as_path(dirs.train_dir) / "metadata.json").exists():
        logging.info("No data configured: building %s shards in %s", source, dirs.train_dir)
    shards.build_shards(source, dirs.train_dir, limit=data.max_molecules or None, **common)
    if dirs.eval_dir is not None and not data.eval_dir:  # The default held-out set.
        shards.build_shards(
            source, dirs.eval_dir, offset=data.max_molecules, limit=data.eval_molecules, **common
        )
