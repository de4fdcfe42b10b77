"""One shard file being written: framed records, hashed and counted on the way."""

from __future__ import annotations

import collections
import contextlib
import hashlib

from etils import epath

from moleblend_jax.data import serialize
from moleblend_jax.errors import UserError
from moleblend_jax.schema import SHARD_SUFFIX


def shard_name(index: int, num_shards: int) -> str:
    return f"shard-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


class ShardFile:
    """One shard being written: framed records appended to a temporary file, which is hashed
    and counted on the way (used by the local writer and by the Beam writer's workers)."""

    def __init__(self, path: epath.Path):
        self._path = path
        self._file = guard(path, lambda: path.open("wb"))
        self._sha256 = hashlib.sha256()
        self._size = 0
        self._atom_counts = collections.Counter()
        self._conformers = collections.Counter()

    def add(self, data: bytes, n_atoms: int, conformer: str) -> None:
        """Appends one serialized record (`process_chunk`'s bytes) of n_atoms atoms."""
        framed = serialize.frame(data)
        guard(self._path, lambda: self._file.write(framed))
        self._sha256.update(framed)
        self._size += len(framed)
        self._atom_counts[n_atoms] += 1
        self._conformers[conformer] += 1

    def close(self) -> dict:
        """Closes the file -> its stats: num_records, bytes, sha256, atom_counts, conformers
        (plain JSON types, so Beam workers can send them back)."""
        guard(self._path, self._file.close)
        return dict(
            num_records=sum(self._atom_counts.values()),
            bytes=self._size,
            sha256=self._sha256.hexdigest(),
            atom_counts={str(k): v for k, v in sorted(self._atom_counts.items())},
            conformers=dict(sorted(self._conformers.items())),
        )

    def abort(self) -> None:
        """Closes the file quietly after a failure (it is about to be deleted)."""
        with contextlib.suppress(OSError):
            self._file.close()


def guard(path: epath.Path, write):
    """write() -> its result; an OSError (a full disk) becomes a UserError naming `path`."""
    try:
        return write()
    except OSError as err:
        raise UserError(f"{path}: writing shards failed: {err.strerror or err}") from None
