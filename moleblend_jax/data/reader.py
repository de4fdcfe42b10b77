"""Reading shard directories back: metadata checks and `iter_records` (plain Python, no TF).

Paths go through `etils.epath`, so a shard directory may be local or `gs://...`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from etils import epath

from moleblend_jax.data import serialize
from moleblend_jax.errors import UserError
from moleblend_jax.schema import METADATA_FILE, SCHEMA_VERSION


def read_metadata(data_dir: str | os.PathLike) -> dict | None:
    """metadata.json of a shard directory, or None when it is missing or corrupt (the build
    did not finish: rebuild). `load_metadata` is the strict reader."""
    path = epath.Path(data_dir) / METADATA_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def load_metadata(data_dir: str | os.PathLike) -> dict:
    """metadata.json of a complete shard directory; raises a clear error otherwise."""
    path = epath.Path(data_dir) / METADATA_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{data_dir}: no {METADATA_FILE}: not a shard directory, or its build did not finish "
            "(rerun data_prep/build_shards.py)"
        )
    metadata = read_metadata(data_dir)
    if metadata is None:
        raise UserError(
            f"{path}: corrupt (not JSON); rebuild the shards with data_prep/build_shards.py"
        )
    if metadata.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema_version {metadata.get('schema_version')} != {SCHEMA_VERSION} "
            "(written by another version of the shard format); rebuild the shards with "
            "data_prep/build_shards.py"
        )
    return metadata


def count_oversize(metadata: dict, largest_bucket: int) -> tuple[int, int]:
    """-> (molecules with more atoms than `largest_bucket`, the largest atom count) of a shard
    directory, from its metadata.json histogram."""
    sizes = {int(n): c for n, c in metadata["atom_count_histogram"].items()}
    return sum(c for n, c in sizes.items() if n > largest_bucket), max(sizes, default=0)


def shard_paths(data_dir: str | os.PathLike, metadata: dict | None = None) -> list[str]:
    """Paths of all shard files, in shard order, after checking each one's size.

    Raises CorruptRecordError naming the file when a shard is missing or truncated.
    """
    metadata = metadata or load_metadata(data_dir)
    paths = []
    for shard in metadata["shards"]:
        path = epath.Path(data_dir) / shard["file"]
        if not path.exists():
            raise serialize.CorruptRecordError(f"{path}: shard file missing")
        size = path.stat().length
        if size != shard["bytes"]:
            raise serialize.CorruptRecordError(
                f"{path}: {size} bytes but metadata says {shard['bytes']} (truncated or modified)"
            )
        paths.append(os.fspath(path))
    return paths


def iter_records(data_dir: str | os.PathLike) -> Iterator[dict]:
    """Yields every record (docs/batch_format.md) of a shard directory in source order.

    The k-th written record lives in shard k % num_shards, so reading the shards round-robin
    restores source order. Raises CorruptRecordError naming the file on a corrupt shard.
    """
    paths = shard_paths(data_dir)
    readers = [serialize.read_frames(p) for p in paths]
    active = list(range(len(readers)))
    while active:
        still = []
        for i in active:
            data = next(readers[i], None)
            if data is None:
                continue
            try:
                yield serialize.decode_record(data)
            except Exception as err:
                raise serialize.CorruptRecordError(
                    f"{paths[i]}: undecodable record: {err}"
                ) from err
            still.append(i)
        # A shard that ran out ends the round-robin for it; later shards may hold one more.
        active = still
