"""Paths for workdirs, checkpoints and metrics: local or `gs://`-style, through `etils.epath`.

`pathlib.Path("gs://bucket/run")` silently becomes the local path `gs:/bucket/run`; every path
the training code writes goes through `as_path` instead.
"""

import os

from etils import epath


def is_local(path: str | os.PathLike) -> bool:
    return "://" not in os.fspath(path)


def as_path(path: str | os.PathLike) -> epath.Path:
    """An epath.Path: a URL (gs://, s3://, ...) kept as it is, a local path made absolute
    (orbax needs absolute paths)."""
    if is_local(path):
        return epath.Path(os.path.abspath(os.fspath(path)))
    return epath.Path(os.fspath(path))
