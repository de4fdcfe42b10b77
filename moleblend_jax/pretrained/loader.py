"""One loader for every way to name a starting encoder (an "init spec"):

  pretrained:NAME (or NAME alone)  a registered encoder shipped in this package (registry.json),
                                   its file's sha256 checked against the registry
  PATH.pt                          the original's (fairseq) checkpoint, converted on the fly
                                   (`interop`; needs torch)
  PATH.npz                         a weights file of `weights.py`'s format (no checksum)
  DIR                              an orbax checkpoints directory or a pretraining workdir
                                   holding one (`train.checkpoint.restore_params`)

Fine-tuning (`--config.init_checkpoint=SPEC`) and `Embedder.from_pretrained(SPEC)` both load
through `load`. Every mistake is a one-line UserError: an unknown name (the known ones
listed), a registered name whose file is not shipped, a wrong checksum, a missing path, a model
config that does not match the weights (`require_matching_config`).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from moleblend_jax import atomic
from moleblend_jax.errors import MissingFileError, UserError
from moleblend_jax.pretrained import registry, weights
from moleblend_jax.train.checkpoint import require_finite_params
from moleblend_jax.train.paths import as_path

PREFIX = "pretrained:"
MODEL_CONFIG_FILE = "model_config.json"  # Beside a pretraining / imported checkpoint.
# The config.model fields that decide what an encoder computes from its params (shapes, norms,
# vocabularies, 3D encodings); dropout, precision, the blend and the pretraining heads do not.
ENCODER_FIELDS = (
    "num_layers",
    "hidden_dim",
    "ffn_dim",
    "num_heads",
    "layer_norm_eps",
    "atom_vocab_size",
    "bond_vocab_size",
    "num_spd_ids",
    "num_degree_ids",
    "max_path_hops",
    "num_kernels",
    "gaussian_std_floor",
    "centrality_scale",
)


@dataclasses.dataclass(frozen=True)
class InitWeights:
    """Loaded weights: `params` a host param tree holding "encoder" (float32 numpy), the
    config.model they were trained with where known (a dict; None: only the shapes can be
    checked), their `kind` ("registry", "fairseq", "weights_file", "orbax"), the pretraining
    budget for results.json (`pretrain_steps`, `pretrain_batch`, `pretrain_molecules`; {}
    unknown) and one line saying what they are."""

    spec: str
    params: dict
    model_config: dict | None
    kind: str
    pretrain: dict
    description: str


def registered_name(spec: str) -> str | None:
    """The registry name `spec` asks for: "pretrained:NAME", or a bare NAME that is not an
    existing path; None for a path."""
    if spec.startswith(PREFIX):
        return spec[len(PREFIX) :]
    if not os.path.exists(spec) and os.sep not in spec and "." not in spec:
        return spec
    return None


def _entry(name: str, spec: str | None = None) -> registry.Entry:
    known = registry.entries()
    if name not in known:
        bare = spec is not None and not spec.startswith(PREFIX)
        what = "neither a file nor a pretrained encoder" if bare else "no such pretrained encoder"
        raise UserError(f"{spec or PREFIX + name}: {what}; known names: {', '.join(known)}")
    entry = known[name]
    if not entry.weights_path.exists():
        raise UserError(
            f"{PREFIX}{name}: its weights file {entry.weights} is not shipped in this install yet "
            f"(see {entry.card_path}); pretrain one yourself and pass its checkpoints directory"
        )
    if not entry.sha256:
        raise UserError(
            f"{PREFIX}{name}: {entry.weights_path} has no sha256 in {registry.REGISTRY_FILE} "
            "yet, so it cannot be checked; package it with `moleblend package-encoder`"
        )
    return entry


def check(spec: str) -> None:
    """The cheap checks of `load` (name known and shipped, path present), before any data."""
    name = registered_name(spec)
    if name is not None:
        _entry(name, spec)
    elif not as_path(spec).exists():
        raise MissingFileError(f"{spec} does not exist (a pretrained name is {PREFIX}NAME)")


def load(spec: str, step: int | None = None) -> InitWeights:
    """The weights an init spec names (see the module docstring); `step`: an orbax
    directory's checkpoint step (None: the newest)."""
    check(spec)
    name = registered_name(spec)
    if name is not None:
        return _load_registered(spec, _entry(name))
    path = as_path(spec)
    if path.is_dir():
        return _load_orbax(spec, path, step)
    if path.suffix == ".pt":
        return _load_fairseq(spec)
    if path.suffix == ".npz":
        return _from_weights_file(spec, path, kind="weights_file")
    raise UserError(
        f"{spec}: not an init (give {PREFIX}NAME, an orbax checkpoints directory, the "
        "original's .pt file or a .npz weights file)"
    )


def _load_registered(spec: str, entry: registry.Entry) -> InitWeights:
    digest = atomic.file_sha256(entry.weights_path)
    if digest != entry.sha256:
        raise UserError(
            f"{spec}: {entry.weights_path} has sha256 {digest}, the registry {entry.sha256}: "
            "the file is damaged or not the released one; reinstall the package"
        )
    return _from_weights_file(spec, entry.weights_path, kind="registry", entry=entry)


def _from_weights_file(spec, path, kind: str, entry: registry.Entry | None = None):
    try:
        params, meta = weights.read(path)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{spec}: not a readable weights file ({err})") from None
    what = f"{PREFIX}{entry.name} ({entry.summary})" if entry else spec
    return InitWeights(
        spec=spec,
        params=params,
        model_config=meta.get("model"),
        kind=kind,
        pretrain=dict(meta.get("pretrain", {})),
        description=f"{what}, {meta['num_params']:,} params stored as {meta['dtype']}",
    )


def _load_orbax(spec: str, path, step: int | None) -> InitWeights:
    from moleblend_jax.train.budget import pretraining_budget
    from moleblend_jax.train.checkpoint import restore_params

    directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    try:
        params = restore_params(directory, step)
    except FileNotFoundError as err:
        raise UserError(f"{spec}: {err}") from None
    require_finite_params(params, spec)
    model_config = None
    for folder in (directory, directory.parent):
        if (folder / MODEL_CONFIG_FILE).exists():
            model_config = json.loads((folder / MODEL_CONFIG_FILE).read_text())
            break
    return InitWeights(
        spec=spec,
        params=params,
        model_config=model_config,
        kind="orbax",
        pretrain=pretraining_budget(directory),
        description=f"orbax checkpoint {directory}",
    )


def _load_fairseq(spec: str) -> InitWeights:
    from moleblend_jax.interop import fairseq, fairseq_file

    try:
        imported = fairseq.import_checkpoint(spec)
    except fairseq_file.TorchMissingError as err:
        raise UserError(f"{spec}: {err}") from None
    except (OSError, EOFError, RuntimeError, ValueError, KeyError, AttributeError) as err:
        raise UserError(
            f"{spec}: not a readable fairseq MoleBLEND checkpoint ({type(err).__name__}: {err})"
        ) from None
    params = imported.conversion.params
    require_finite_params(params, spec)
    return InitWeights(
        spec=spec,
        params=params,
        model_config=dataclasses.asdict(imported.model_config),
        kind="fairseq",
        pretrain={},
        description=f"the original's {imported.conversion.kind} checkpoint {spec}, converted",
    )


def require_matching_config(init: InitWeights, model_config, where: str = "config.model") -> None:
    """UserError naming the ENCODER_FIELDS in which `model_config` (config.model or a
    ModelConfig) differs from the config the weights were trained with (when known)."""
    if init.model_config is None:
        return
    values = model_config if hasattr(model_config, "get") else dataclasses.asdict(model_config)
    differ = [
        f"{field} {values.get(field)} (weights {init.model_config[field]})"
        for field in ENCODER_FIELDS
        if field in init.model_config
        and values.get(field) is not None
        and _differs(values.get(field), init.model_config[field])
    ]
    if differ:
        hint = ""
        name = registered_name(init.spec)
        if name is not None:
            hint = f"; use --config={registry.entries()[name].config}"
        raise UserError(
            f"{init.spec} does not fit {where}: {', '.join(differ)}{hint} (or the sizes the "
            "weights were trained with)"
        )


def _differs(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return not np.isclose(float(a), float(b), rtol=1e-9, atol=0.0)
    return a != b


def describe(spec: str | None) -> str:
    """The init a fine-tuning run uses, for its log: 'random init' or the spec."""
    return spec if spec else "random init (no config.init_checkpoint)"
