"""Outputs written whole or not at all: a temporary file beside the target, renamed over it.

Every file the project writes for a user (predictions, embeddings, results.json, split files,
predictor.json, config.json) goes through `writing` (or `write_text` / `write_json`). A reader
sees the old file or the new one, never a prefix; a failed write (a full disk) removes the
temporary file, keeps the old one, and raises `OutputWriteError` naming the path.
Object-store paths (gs://) are written directly: an upload there is already all or nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile

from etils import epath

from moleblend_jax.errors import UserError

_open = open  # Replaced by tests that inject a failing write.


class OutputWriteError(UserError):
    """An output could not be written (a full disk, no permission); nothing partial is left."""


def _describe(err: OSError) -> str:
    return err.strerror or str(err)


@contextlib.contextmanager
def writing(path: str | os.PathLike, mode: str = "w"):
    """Yields a file handle (mode "w" or "wb") whose contents replace `path` when the block
    ends without an exception; an OSError while writing raises OutputWriteError."""
    if "://" in os.fspath(path):
        with epath.Path(path).open(mode) as handle:
            yield handle
        return
    path = epath.Path(os.path.abspath(os.fspath(path)))
    if path.is_dir():
        raise OutputWriteError(f"{path} is a directory; give a file name to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise OutputWriteError(f"could not write {path}: {_describe(err)}") from None
    try:
        with _open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as err:
        raise OutputWriteError(
            f"could not write {path}: {_describe(err)} (nothing was written there)"
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    with writing(path) as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, value, indent: int | None = 1, **kwargs) -> None:
    """`value` as JSON (with a final newline), written atomically."""
    write_text(path, json.dumps(value, indent=indent, **kwargs) + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (local or object-store path), read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with epath.Path(path).open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
