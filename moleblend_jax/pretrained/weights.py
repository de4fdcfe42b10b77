"""A pretrained encoder's weights file: a deterministic, compressed .npz of flattened params.

One array per parameter, keyed by its path in the param tree ("encoder/layer_0/ffn/kernel"),
and one `__meta__` entry: JSON (as uint8 bytes) with the format version, the storage dtype, the
model config the weights were trained with (config.model) and where they came from. bfloat16
weights are stored as their uint16 bit patterns (numpy has no bfloat16 of its own) and come back
as float32. The zip entries carry a fixed timestamp, so the same params give the same bytes and
so the same sha256.
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import ml_dtypes
import numpy as np

from moleblend_jax import atomic

FORMAT = 1
META_KEY = "__meta__"
STORAGE_DTYPES = ("bfloat16", "float32")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # The earliest a zip entry can hold: no build time in the file.


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict of arrays -> {"a/b/c": array}, in sorted key order."""
    flat = {}
    for key in sorted(tree):
        value, name = tree[key], f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}/"))
        else:
            flat[name] = np.asarray(value)
    return flat


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    """{"a/b/c": array} -> nested dict."""
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def _stored(value: np.ndarray, dtype: str) -> np.ndarray:
    """float32 -> the array written: itself, or its bfloat16 rounding's uint16 bits."""
    value = np.asarray(value, np.float32)
    return value.astype(ml_dtypes.bfloat16).view(np.uint16) if dtype == "bfloat16" else value


def _restored(value: np.ndarray, dtype: str) -> np.ndarray:
    return value.view(ml_dtypes.bfloat16).astype(np.float32) if dtype == "bfloat16" else value


def rounded(params: dict, dtype: str) -> dict:
    """The params as a file of `dtype` gives them back (float32, bfloat16-rounded or not)."""
    flat = flatten(params)
    return unflatten({k: _restored(_stored(v, dtype), dtype) for k, v in flat.items()})


def write(path: str | os.PathLike, params: dict, meta: dict, dtype: str = "bfloat16") -> None:
    """params (nested dict of float arrays) -> the weights file at `path`, atomically; `meta`
    (JSON values: model config, provenance) is stored beside them."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype={dtype!r}; use one of {STORAGE_DTYPES}")
    flat = flatten(params)
    header = {**meta, "format": FORMAT, "dtype": dtype, "num_params": _count(flat)}
    entries = {name: _stored(value, dtype) for name, value in flat.items()}
    entries[META_KEY] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)
    with atomic.writing(path, "wb") as handle, zipfile.ZipFile(handle, "w") as archive:
        for name, value in entries.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def read(path: str | os.PathLike) -> tuple[dict, dict]:
    """A weights file -> (nested float32 params, its meta). ValueError for a file that is not
    one (no meta entry, another format)."""
    with np.load(path, allow_pickle=False) as archive:
        if META_KEY not in archive.files:
            raise ValueError(f"{path}: not a pretrained-weights file (no {META_KEY} entry)")
        meta = json.loads(archive[META_KEY].tobytes().decode())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: weights format {meta.get('format')} is not {FORMAT}")
        flat = {
            name: _restored(archive[name], meta["dtype"])
            for name in archive.files
            if name != META_KEY
        }
    return unflatten(flat), meta


def _count(flat: dict[str, np.ndarray]) -> int:
    return int(sum(value.size for value in flat.values()))
