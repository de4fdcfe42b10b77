"""A pretraining workdir's orbax checkpoint -> a registered encoder's weights file.

`package_checkpoint` keeps the encoder's params only (the pretraining heads are not needed to
fine-tune or embed), rounded to bfloat16 by default (3.85M params of configs/base.py:small:
7.7 MB), with the model config and the run's budget and last held-out metrics in the file's
meta; the registry's sha256 is then set to the new file's (`registry.set_sha256`).
`moleblend package-encoder` is the command.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

from moleblend_jax import atomic
from moleblend_jax.errors import UserError
from moleblend_jax.pretrained import registry, weights
from moleblend_jax.pretrained.loader import MODEL_CONFIG_FILE
from moleblend_jax.train.paths import as_path

METRICS_FILE = "metrics.jsonl"
HELD_OUT_PREFIX = "eval_"


@dataclasses.dataclass(frozen=True)
class Packaged:
    """What `package_checkpoint` wrote: the file, its sha256 and size in bytes, the number of
    params, the checkpoint step and the last held-out metrics of the run ({} none logged)."""

    path: pathlib.Path
    sha256: str
    size_bytes: int
    num_params: int
    step: int
    held_out: dict


def _workdir_and_checkpoints(checkpoint) -> tuple[pathlib.Path, pathlib.Path]:
    path = pathlib.Path(os.fspath(checkpoint))
    if (path / "checkpoints").is_dir():
        return path, path / "checkpoints"
    return path.parent, path


def last_held_out(workdir) -> tuple[int | None, dict]:
    """(step, {eval_*: value}) of the last metrics.jsonl line holding held-out metrics."""
    from moleblend_jax.train.metrics_writer import read_jsonl

    path = as_path(workdir) / METRICS_FILE
    if not path.exists():
        return None, {}
    for line in reversed(read_jsonl(path)):
        held_out = {k: v for k, v in line.items() if k.startswith(HELD_OUT_PREFIX)}
        if held_out:
            return line.get("step"), held_out
    return None, {}


def package_checkpoint(
    checkpoint: str | os.PathLike,
    name: str,
    out_dir: str | os.PathLike | None = None,
    dtype: str = "bfloat16",
    step: int | None = None,
    update_registry: bool = True,
) -> Packaged:
    """Writes OUT_DIR/<entry's weights file> (default: this package's folder) from a pretraining
    workdir (or its checkpoints directory) and, with `update_registry`, sets the entry's sha256
    in the registry.json of OUT_DIR (or this package's). UserError for an unknown name, a
    missing checkpoint or a workdir without model_config.json."""
    from moleblend_jax.train.budget import pretraining_budget
    from moleblend_jax.train.checkpoint import restore_params

    known = registry.entries()
    if name not in known:
        raise UserError(f"--name={name}: not a registered encoder; known: {', '.join(known)}")
    if dtype not in weights.STORAGE_DTYPES:
        raise UserError(f"--dtype={dtype}; use one of {weights.STORAGE_DTYPES}")
    workdir, checkpoints = _workdir_and_checkpoints(checkpoint)
    config_path = next(
        (p for p in (checkpoints / MODEL_CONFIG_FILE, workdir / MODEL_CONFIG_FILE) if p.exists()),
        None,
    )
    if config_path is None:
        raise UserError(
            f"{checkpoint}: no {MODEL_CONFIG_FILE} beside it; give a pretraining workdir "
            "(moleblend pretrain writes one)"
        )
    try:
        params = restore_params(checkpoints, step)
    except FileNotFoundError as err:
        raise UserError(f"{checkpoint}: {err}") from None
    if "encoder" not in params:
        raise UserError(f"{checkpoint} has no 'encoder' parameters; is it a MoleBLEND checkpoint?")
    from moleblend_jax.train.checkpoint import latest_step

    saved_step = step if step is not None else latest_step(checkpoints)
    held_out_step, held_out = last_held_out(workdir)
    meta = {
        "name": name,
        "model": json.loads(config_path.read_text()),
        "pretrain": {**pretraining_budget(checkpoints), "pretrain_steps": saved_step},
        "held_out": {"step": held_out_step, **held_out},
    }
    out_dir = pathlib.Path(out_dir) if out_dir is not None else registry.directory()
    path = out_dir / known[name].weights
    weights.write(path, {"encoder": params["encoder"]}, meta, dtype)
    digest = atomic.file_sha256(path)
    if update_registry:
        registry_file = out_dir / registry.REGISTRY_FILE
        if not registry_file.exists():
            registry_file.write_text(registry.registry_path().read_text())
        registry.set_sha256(name, digest, registry_file)
    return Packaged(
        path=path,
        sha256=digest,
        size_bytes=path.stat().st_size,
        num_params=int(sum(v.size for v in weights.flatten(params["encoder"]).values())),
        step=int(saved_step),
        held_out=held_out,
    )
