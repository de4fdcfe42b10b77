"""The original's state-dict keys, one `Rule` per leaf of our param tree (docs/interop.md).

`rules_for(kind, config, tables)` lists every key of a fairseq MoleBLEND checkpoint of `kind`
("pretrained" or "finetuned"), its shape, the leaf of our tree it maps to, and the conversions
both ways (transposes, reshapes, table row layouts from `interop.tables`). `interop.fairseq`
applies them.
"""

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from moleblend_jax.interop import tables
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
        *(
            _table(
                f"encoder/degree_embed/{side}/embedding",
                f"{atoms}{side}_degree_encoder.weight",
                tables.IDENTITY,
                rows,
                d,
                cfg.num_degree_ids,
            )
            for side, rows in (("in", t.num_in_degree), ("out", t.num_out_degree))
        ),
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
