"""The original (fairseq) MoleBLEND state dict <-> this repository's Flax params (docs/interop.md).

Two checkpoint kinds, told apart by their keys (`checkpoint_kind`):
- "pretrained": the pretraining model; params are `MoleBlend(config)`'s tree (encoder and the
  four heads).
- "finetuned": a fine-tuned MoleculeNet model (`encoder.proj_out.*`, no 3D modules or
  pretraining heads); params are `FinetuneModel(config, num_tasks, use_3d=False)`'s tree.
`state_dict_from_params` tells the kinds apart by the tree (a "head_out" entry = fine-tuned).

Both directions are strict: every unknown, missing or mis-shaped key is named in one ValueError.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from moleblend_jax.interop import fairseq_file, tables
from moleblend_jax.interop.keys import (
    DEFAULT_TABLES,
    FINETUNE_HEAD_KEY,
    FINETUNED,
    PRETRAINED,
    UNUSED_HEAD,
    Rule,
    checkpoint_kind,
    rules_for,
    unused_head,
)
from moleblend_jax.model.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Conversion:
    """What `convert_state_dict` made of a state dict."""

    params: dict
    kind: str
    mapped: list[str]  # Original keys carried over.
    dropped: list[str]  # Known-unused original keys left out.
    notes: list[str]  # Table rows one side cannot hold (tables.table_to_ours).


def _problems(expected: dict[str, tuple], actual: dict[str, tuple], ignored, what: str) -> None:
    """One ValueError naming every unknown, missing and mis-shaped entry, if there are any."""
    unknown = sorted(set(actual) - set(expected) - set(ignored))
    missing = sorted(set(expected) - set(actual))
    mismatched = [
        f"{name}: {tuple(actual[name])} != expected {tuple(shape)}"
        for name, shape in sorted(expected.items())
        if name in actual and tuple(actual[name]) != tuple(shape)
    ]
    if unknown or missing or mismatched:
        lines = [f"{what} does not match the model (docs/interop.md):"]
        for title, items in (
            ("unknown", unknown),
            ("missing", missing),
            ("shape mismatch", mismatched),
        ):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines += [f"    {item}" for item in items]
        raise ValueError("\n".join(lines))


def _set(tree: dict, path: str, value: np.ndarray) -> None:
    *parents, leaf = path.split("/")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    model_config: ModelConfig | Mapping,
    tables_: tables.FairseqTables = DEFAULT_TABLES,
) -> Conversion:
    """Original state dict (float32 numpy) -> our params and what was mapped, dropped, noted."""
    kind = checkpoint_kind(state_dict)
    num_tasks = state_dict[FINETUNE_HEAD_KEY].shape[0] if kind == FINETUNED else 0
    rules = rules_for(kind, model_config, tables_, num_tasks)
    expected = {
        key: shape for rule in rules for key, shape in zip(rule.originals, rule.shapes, strict=True)
    }
    actual = {key: np.shape(value) for key, value in state_dict.items()}
    try:
        _problems(expected, actual, UNUSED_HEAD, f"The {kind} state dict")
    except ValueError as error:
        if kind == FINETUNED and any("molecule_3d_bias" in key for key in actual):
            raise ValueError(
                f"{error}\nFine-tuned checkpoints with 3D modules are not "
                "supported (the original fine-tunes MoleculeNet in 2D)."
            ) from None
        raise
    params, notes = {}, []
    for rule in rules:
        value, rule_notes = rule.to_ours(
            [np.asarray(state_dict[k], np.float32) for k in rule.originals]
        )
        _set(params, rule.ours, np.ascontiguousarray(value, np.float32))
        notes += rule_notes
    mapped = sorted(expected)
    dropped = sorted(set(state_dict) & set(UNUSED_HEAD))
    return Conversion(params=params, kind=kind, mapped=mapped, dropped=dropped, notes=notes)


def params_from_state_dict(
    state_dict: Mapping[str, np.ndarray],
    model_config: ModelConfig | Mapping,
    tables_: tables.FairseqTables = DEFAULT_TABLES,
) -> dict:
    """Original state dict -> the param tree of `MoleBlend(model_config)` (pretrained keys) or
    of `FinetuneModel(model_config, num_tasks, use_3d=False)` (keys with `encoder.proj_out.*`;
    num_tasks = rows of its out_proj). See `convert_state_dict` for the report."""
    return convert_state_dict(state_dict, model_config, tables_).params


def export_state_dict(
    params: Mapping,
    model_config: ModelConfig | Mapping,
    tables_: tables.FairseqTables = DEFAULT_TABLES,
    include_unused_head: bool = True,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Our params (either kind) -> (original-layout float32 state dict, notes on dropped rows).

    Rows our tables lack are zero. `include_unused_head` adds the HOMO-LUMO head (zeros, unit
    LayerNorm) so that the original's pretraining model loads the result strictly.
    """
    flat = {name: np.asarray(value, np.float32) for name, value in _flatten(params).items()}
    kind = FINETUNED if "head_out/kernel" in flat else PRETRAINED
    num_tasks = flat["head_out/kernel"].shape[1] if kind == FINETUNED else 0
    rules = rules_for(kind, model_config, tables_, num_tasks)
    expected = {rule.ours: _our_shape(rule) for rule in rules}
    _problems(expected, {k: v.shape for k, v in flat.items()}, (), f"The {kind} param tree")
    state_dict, notes = {}, []
    for rule in rules:
        arrays, rule_notes = rule.to_original(flat[rule.ours])
        state_dict.update(
            {
                k: np.ascontiguousarray(a, np.float32)
                for k, a in zip(rule.originals, arrays, strict=True)
            }
        )
        notes += rule_notes
    if include_unused_head and kind == PRETRAINED:
        state_dict.update(unused_head(ModelConfig.coerce(model_config).hidden_dim))
    return state_dict, notes


def _our_shape(rule: Rule) -> tuple[int, ...]:
    """The shape our leaf has: the import of zeros of the original shapes."""
    value, _ = rule.to_ours([np.zeros(shape, np.float32) for shape in rule.shapes])
    return value.shape


def state_dict_from_params(
    params: Mapping,
    model_config: ModelConfig | Mapping,
    tables_: tables.FairseqTables = DEFAULT_TABLES,
) -> dict[str, np.ndarray]:
    """Our params -> original-layout float32 numpy state dict (`export_state_dict`, notes
    dropped), e.g. to fine-tune a model pretrained here with the original code."""
    return export_state_dict(params, model_config, tables_)[0]


@dataclasses.dataclass(frozen=True)
class ImportedCheckpoint:
    """A fairseq checkpoint file converted: the conversion, our config, what was cast."""

    conversion: Conversion
    model_config: ModelConfig
    cast: list[str]  # Keys stored in another dtype (fp16 with --fp16), cast to float32.


def import_checkpoint(path: str) -> ImportedCheckpoint:
    """Reads a fairseq checkpoint file (needs torch) and converts it; sizes from its cfg."""
    state_dict, fairseq_cfg, cast = fairseq_file.read_checkpoint(path)
    model_config, tables_ = fairseq_file.model_config_from_cfg(fairseq_cfg)
    conversion = convert_state_dict(state_dict, model_config, tables_)
    return ImportedCheckpoint(conversion=conversion, model_config=model_config, cast=cast)


def load_checkpoint(path: str) -> tuple[dict, ModelConfig]:
    """fairseq checkpoint file -> (params, ModelConfig with float32 activations). The params are
    `MoleBlend`'s tree, or `FinetuneModel`'s for a fine-tuned checkpoint ("head_out" in it)."""
    imported = import_checkpoint(path)
    return imported.conversion.params, imported.model_config
