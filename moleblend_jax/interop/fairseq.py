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
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from moleblend_jax.interop import fairseq_file, tables
from moleblend_jax.model.config import ModelConfig

PRETRAINED, FINETUNED = "pretrained", "finetuned"
ENCODER = "encoder.molecule_encoder."


def unused_head(hidden_dim: int) -> dict[str, np.ndarray]:
    """The original's HOMO-LUMO head (computed, never in its pretraining loss), as export writes
    it: zeros with a unit LayerNorm, so that the original loads the state dict strictly."""
    d, zeros = hidden_dim, np.zeros
    return {
        "encoder.lm_head_transform_weight.weight": zeros((d, d), np.float32),
        "encoder.lm_head_transform_weight.bias": zeros(d, np.float32),
        "encoder.layer_norm.weight": np.ones(d, np.float32),
        "encoder.layer_norm.bias": zeros(d, np.float32),
        "encoder.embed_out.weight": zeros((1, d), np.float32),
        "encoder.lm_output_learned_bias": zeros(1, np.float32),
    }


UNUSED_HEAD = tuple(unused_head(1))  # Keys dropped on import.
FINETUNE_HEAD_KEY = "encoder.proj_out.out_proj.weight"
DEFAULT_TABLES = tables.FairseqTables()


Notes = list[str]


@dataclasses.dataclass(frozen=True)
class Rule:
    """Original keys <-> one leaf of our tree ('/'-joined path), with both conversions."""

    ours: str
    originals: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    to_ours: Callable[[list[np.ndarray]], tuple[np.ndarray, Notes]]
    to_original: Callable[[np.ndarray], tuple[list[np.ndarray], Notes]]


@dataclasses.dataclass(frozen=True)
class Conversion:
    """What `convert_state_dict` made of a state dict."""

    params: dict
    kind: str
    mapped: list[str]  # Original keys carried over.
    dropped: list[str]  # Known-unused original keys left out.
    notes: list[str]  # Table rows one side cannot hold (tables.table_to_ours).


def _reshaped(ours: str, original: str, shape: tuple[int, ...]) -> Rule:
    """Same numbers, original `shape` (e.g. [1, D] for our [D])."""
    return Rule(
        ours,
        (original,),
        (shape,),
        lambda a: (a[0].reshape(-1), []),
        lambda x: ([x.reshape(shape)], []),
    )


def _linear(ours: str, original: str, fan_in: int, fan_out: int) -> list[Rule]:
    """torch Linear weight [out, in], bias [out] <-> Flax kernel [in, out], bias [out]."""
    return [
        Rule(
            f"{ours}/kernel",
            (f"{original}.weight",),
            ((fan_out, fan_in),),
            lambda a: (a[0].T, []),
            lambda x: ([x.T], []),
        ),
        _reshaped(f"{ours}/bias", f"{original}.bias", (fan_out,)),
    ]


def _layer_norm(ours: str, original: str, width: int) -> list[Rule]:
    return [
        _reshaped(f"{ours}/scale", f"{original}.weight", (width,)),
        _reshaped(f"{ours}/bias", f"{original}.bias", (width,)),
    ]


def _table(
    ours: str, original: str, layout: tables.RowLayout, num_rows: int, width: int, vocab: int
) -> Rule:
    def to_original(x):
        table, notes = tables.table_to_original(layout, x, num_rows, original)
        return [table], notes

    return Rule(
        ours,
        (original,),
        ((num_rows, width),),
        lambda a: tables.table_to_ours(layout, a[0], vocab, original),
        to_original,
    )


def _degree(ours: str, t: tables.FairseqTables, width: int, vocab: int) -> Rule:
    """The original's in- and out-degree tables, looked up with the same id and summed, <->
    our one table (their sum; export puts it in the in-degree table, zeros in the other)."""
    names = tuple(f"{ENCODER}atom_feature.{k}_degree_encoder.weight" for k in ("in", "out"))
    shapes = ((t.num_in_degree, width), (t.num_out_degree, width))

    def to_ours(arrays):
        rows = min(t.num_in_degree, t.num_out_degree)
        summed = arrays[0][:rows] + arrays[1][:rows]
        return tables.table_to_ours(tables.IDENTITY, summed, vocab, "degree tables (summed)")

    def to_original(x):
        in_table, notes = tables.table_to_original(tables.IDENTITY, x, t.num_in_degree, names[0])
        return [in_table, np.zeros(shapes[1], np.float32)], notes

    return Rule(ours, names, shapes, to_ours, to_original)


def _hop_weights(ours: str, t: tables.FairseqTables, heads: int, hops: int) -> Rule:
    """edge_dis_encoder [num_edge_dis * H * H, 1] = [hop, h_in, h_out] <-> our first `hops`."""
    original = f"{ENCODER}molecule_attn_bias.edge_dis_encoder.weight"
    shape = (t.num_edge_dis * heads * heads, 1)

    def to_ours(arrays):
        full = arrays[0].reshape(t.num_edge_dis, heads, heads)
        unused = int(np.count_nonzero(np.any(full[hops:] != 0, axis=(1, 2))))
        notes = (
            [
                f"{original}: hop matrices {hops}..{t.num_edge_dis - 1} ({unused} nonzero) are "
                f"never read with multi_hop_max_dist = {hops}, dropped"
            ]
            if unused
            else []
        )
        return full[:hops].copy(), notes

    def to_original(x):
        full = np.zeros((t.num_edge_dis, heads, heads), np.float32)
        full[:hops] = x
        return [full.reshape(shape)], []

    return Rule(ours, (original,), (shape,), to_ours, to_original)


def _encoder_rules(cfg: ModelConfig, t: tables.FairseqTables, use_3d: bool) -> list[Rule]:
    d, h, k = cfg.hidden_dim, cfg.num_heads, cfg.num_kernels
    e, atoms = ENCODER, f"{ENCODER}atom_feature."
    bias = f"{ENCODER}molecule_attn_bias."
    rules = [
        _table(
            "encoder/atom_embed/embed/embedding",
            f"{atoms}atom_encoder.weight",
            tables.ATOMS,
            t.num_atoms + 1,
            d,
            cfg.atom_vocab_size,
        ),
        _degree("encoder/degree_embed/embed/embedding", t, d, cfg.num_degree_ids),
        _reshaped("encoder/graph_token/token", f"{atoms}graph_token.weight", (1, d)),
        _reshaped(
            "encoder/graph_token/attention_bias",
            f"{bias}graph_token_virtual_distance.weight",
            (1, h),
        ),
        _table(
            "encoder/edge_bias/embedding",
            f"{bias}edge_encoder.weight",
            tables.BONDS,
            t.num_edges + 1,
            h,
            cfg.bond_vocab_size,
        ),
        _hop_weights("encoder/edge_bias/hop_weights", t, h, cfg.max_path_hops),
        _table(
            "encoder/spd_bias/embed/embedding",
            f"{bias}spatial_pos_encoder.weight",
            tables.IDENTITY,
            t.num_spatial,
            h,
            cfg.num_spd_ids,
        ),
        *_layer_norm("encoder/input_norm", f"{e}emb_layer_norm", d),
    ]
    for i in range(cfg.num_layers):
        ours, layer = f"encoder/layer_{i}", f"{e}layers.{i}"
        for name, torch_name in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "out")):
            rules += _linear(
                f"{ours}/attention/{name}", f"{layer}.self_attn.{torch_name}_proj", d, d
            )
        rules += _layer_norm(f"{ours}/attention_norm", f"{layer}.self_attn_layer_norm", d)
        rules += _linear(f"{ours}/fc1", f"{layer}.fc1", d, cfg.ffn_dim)
        rules += _linear(f"{ours}/fc2", f"{layer}.fc2", cfg.ffn_dim, d)
        rules += _layer_norm(f"{ours}/ffn_norm", f"{layer}.final_layer_norm", d)
    if use_3d:
        gbf = f"{e}molecule_3d_bias.gbf."
        rules += [
            _reshaped("encoder/gaussian_basis/means", f"{gbf}means.weight", (1, k)),
            _reshaped("encoder/gaussian_basis/stds", f"{gbf}stds.weight", (1, k)),
            *(
                _table(
                    f"encoder/gaussian_basis/{name}",
                    f"{gbf}{name}.weight",
                    tables.PAIR_TYPES,
                    t.num_edges,
                    1,
                    cfg.atom_vocab_size,
                )
                for name in ("mul", "bias")
            ),
            *_linear("encoder/gaussian_bias/hidden", f"{e}molecule_3d_bias.gbf_proj.layer1", k, k),
            *_linear("encoder/gaussian_bias/out", f"{e}molecule_3d_bias.gbf_proj.layer2", k, h),
            *_linear("encoder/centrality/proj", f"{e}molecule_3d_bias.edge_proj", k, d),
        ]
    return rules


def _pair_head_rules(cfg: ModelConfig, ours: str, original: str, out_name: str, out: int):
    d, p = cfg.hidden_dim, cfg.pair_head_dim
    n2 = f"{ENCODER}{original}.transform_n2_head"
    rules = []
    for side, torch_side in (("row", "row"), ("col", "column")):
        rules += _linear(f"{ours}/{side}/dense", f"{n2}.{torch_side}_head", d, p)
        rules += _layer_norm(f"{ours}/{side}/norm", f"{n2}.{torch_side}_LayerNorm", p)
    return rules + _linear(f"{ours}/linear", f"{ENCODER}{original}.{out_name}", p * p, out)


def _head_rules(cfg: ModelConfig) -> list[Rule]:
    if cfg.tied_denoise_head:
        raise ValueError(
            "The original's denoising head has one Linear per axis: "
            "set config.model.tied_denoise_head = False."
        )
    d = cfg.hidden_dim
    rules = []
    for name, torch_name in (("query", "q"), ("key", "k"), ("value", "v")):
        rules += _linear(f"denoise_head/{name}", f"{ENCODER}atom_proc.{torch_name}_proj", d, d)
    for i, axis in enumerate("xyz", start=1):
        rules += _linear(f"denoise_head/proj_{axis}", f"{ENCODER}atom_proc.force_proj{i}", d, 1)
    rules += _pair_head_rules(cfg, "spd_head", "blend_spd_pred_head", "linear", cfg.num_spd_classes)
    rules += _pair_head_rules(
        cfg,
        "edge_head",
        "blend_edge_pred_head",
        "linear_map_feature",
        cfg.max_path_hops * cfg.num_edge_classes,
    )
    hidden = cfg.direction_hidden_dim
    rules += _pair_head_rules(cfg, "direction_head", "blend_3d_pred_head", "linear", hidden)
    for i, axis in enumerate("xyz", start=1):
        rules += _linear(
            f"direction_head/proj_{axis}", f"{ENCODER}blend_3d_pred_head.force_proj{i}", hidden, 1
        )
    return rules


def _finetune_rules(cfg: ModelConfig, num_tasks: int) -> list[Rule]:
    d = cfg.hidden_dim
    return [
        *_linear("head_hidden", "encoder.proj_out.dense", d, d),
        *_linear("head_out", "encoder.proj_out.out_proj", d, num_tasks),
    ]


def rules_for(
    kind: str, config: ModelConfig | Mapping, tables_: tables.FairseqTables, num_tasks: int = 0
) -> list[Rule]:
    """Every key of a checkpoint of `kind` and the leaf of our tree it maps to."""
    cfg = ModelConfig.coerce(config)
    if kind == PRETRAINED:
        return _encoder_rules(cfg, tables_, use_3d=True) + _head_rules(cfg)
    if kind == FINETUNED:
        return _encoder_rules(cfg, tables_, use_3d=False) + _finetune_rules(cfg, num_tasks)
    raise ValueError(f"Unknown checkpoint kind {kind!r}.")


def checkpoint_kind(keys) -> str:
    """FINETUNED when the keys hold the fine-tuning head (`encoder.proj_out.*`), else PRETRAINED."""
    return FINETUNED if FINETUNE_HEAD_KEY in keys else PRETRAINED


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
