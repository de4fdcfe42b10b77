"""The pretrained encoders shipped in this package, by name (registry.json beside this file).

Each entry names the fine-tuning config whose model its weights fit ("configs/finetune.py:small"),
its weights file (package data beside this module, `weights.py`'s format), the file's sha256
(null until the weights are packaged: `moleblend package-encoder`), its model card and a one-line
summary. The file is JSON so that packaging can set the sha256 without editing Python source.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from importlib import resources

from moleblend_jax import atomic

REGISTRY_FILE = "registry.json"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered encoder; `weights` and `card` are file names in `directory()`."""

    name: str
    config: str
    weights: str
    sha256: str | None
    card: str
    summary: str

    @property
    def weights_path(self):
        return directory() / self.weights

    @property
    def card_path(self):
        return directory() / self.card


def directory() -> pathlib.Path:
    """The folder holding registry.json, the weights files and the model cards."""
    return pathlib.Path(str(resources.files("moleblend_jax.pretrained")))


def registry_path():
    return directory() / REGISTRY_FILE


def _read(path) -> dict:
    return json.loads(pathlib.Path(path).read_text())


def entries() -> dict[str, Entry]:
    """Name -> Entry, in registry.json's order."""
    raw = _read(registry_path())
    return {name: Entry(name=name, **fields) for name, fields in raw.items()}


def names() -> list[str]:
    return list(entries())


def set_sha256(name: str, digest: str, path: str | os.PathLike | None = None) -> None:
    """Writes `digest` as entry `name`'s sha256 in registry.json (`path`: another registry file
    of the same layout, e.g. a source checkout's)."""
    path = path or registry_path()
    raw = _read(path)
    if name not in raw:
        raise KeyError(name)
    raw[name]["sha256"] = digest
    atomic.write_json(path, raw, indent=2)
