"""MoleBlendEncoder: embeddings + relation biases + blend + post-LN Transformer (SPEC 2-4).

Submodule names (kept stable for checkpoints / fine-tuning; see docs/model.md):
  shared: atom_embed, graph_token, input_norm, layer_0 .. layer_{L-1}
  2D:     spd_bias, edge_bias, degree_embed          (absent when use_2d=False)
  3D:     gaussian_basis, gaussian_bias, centrality  (absent when use_3d=False)
"""

from collections.abc import Mapping
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from moleblend_jax.model.blend import PAIR_3D, blend_pair_bias
from moleblend_jax.model.config import ModelConfig
from moleblend_jax.model.embeddings import (
    AtomEmbedding,
    DegreeEmbedding,
    GraphToken,
    with_graph_token_bias,
)
from moleblend_jax.model.encoder_layer import EncoderLayer
from moleblend_jax.model.layers import Dropout, LayerNorm32, pair_geometry
from moleblend_jax.model.relations import (
    Centrality,
    EdgeBias,
    GaussianBasis,
    GaussianBias,
    SpdBias,
)


class EncoderOutput(NamedTuple):
    """What the backbone returns; unpack as `graph_repr, atom_repr, atom_bias = encoder(...)`."""

    graph_repr: jax.Array  # [B, D] float32 last-layer graph token.
    atom_repr: jax.Array  # [B, N, D] float32 last-layer atom states, zero at padding.
    atom_bias: jax.Array  # [B, H, N, N] float32 atom-pair bias (the denoising head reuses it).


def drop_path_rates(num_layers: int, max_rate: float) -> list[float]:
    """SPEC 2: stochastic depth rising linearly 0 -> max_rate over layers (torch.linspace)."""
    if num_layers == 1:
        return [0.0]
    return [max_rate * i / (num_layers - 1) for i in range(num_layers)]


def atoms_with_coords(batch: Mapping) -> jax.Array:
    """[B, N] bool: real atoms whose coordinates are real (batch["has_coords"], if present).

    The one definition of "has 3D": the encoder gives 3D bias only to pairs of such atoms and
    3D centrality only to such atoms; MoleBlend draws noise and the node blend over them.
    """
    atom_mask = batch["atom_mask"].astype(bool)
    if "has_coords" not in batch:
        return atom_mask
    return atom_mask & batch["has_coords"].astype(bool)[:, None]


class MoleBlendEncoder(nn.Module):
    """The Transformer-M backbone of MoleBLEND.

    `config` is config.model (a ConfigDict, converted once on construction) or a ModelConfig.
    Pretraining uses both modalities and blends them; fine-tuning builds the encoder with
    only the data set's modality (`use_3d=False` for MoleculeNet, `use_2d=False` for QM9).
    """

    config: ModelConfig
    use_2d: bool = True
    use_3d: bool = True

    def __post_init__(self):
        self.config = ModelConfig.coerce(self.config)
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        batch: Mapping,
        train: bool = False,
        *,
        pair_modality: jax.Array | None = None,
        node_blend_3d: jax.Array | None = None,
        coords: jax.Array | None = None,
        coord_mask: jax.Array | None = None,
    ) -> EncoderOutput:
        """Batch per docs/batch_format.md -> EncoderOutput.

        3D terms (bias, centrality) are zero outside `coord_mask` ([B, N] bool; None =
        atoms_with_coords(batch)): atoms of molecules with has_coords false take the degree term.
        pair_modality: [N, N] or [B, N, N] int32 ids (blend.PAIR_*), read only when both
          modalities are used; None = all 3D. node_blend_3d: [B, N] bool, True = 3D
          centrality instead of degree; None = all 3D. coords: [B, N, 3] coordinates the 3D
          modules see (the noisy ones in pretraining); None = batch["coords"].
        """
        cfg = self.config
        use_2d, use_3d = self.use_2d, self.use_3d
        if not (use_2d or use_3d):
            raise ValueError("MoleBlendEncoder needs use_2d or use_3d.")
        atom_mask = batch["atom_mask"].astype(bool)
        atom_features = batch["atom_features"].astype(jnp.int32)
        spd = batch["spd"].astype(jnp.int32)

        atoms = AtomEmbedding(config=cfg, name="atom_embed")(atom_features)
        if use_2d:
            spd_bias = SpdBias(config=cfg, name="spd_bias")(spd)
            edge_bias = EdgeBias(config=cfg, name="edge_bias")(
                batch["path_edges"].astype(jnp.int32), spd
            )
            degree = DegreeEmbedding(config=cfg, name="degree_embed")(spd, atom_mask)
        if use_3d:
            coord_mask = atoms_with_coords(batch) if coord_mask is None else coord_mask
            coords = batch["coords"] if coords is None else coords
            distance, _ = pair_geometry(coords)
            atom_types = atom_features[..., 0]  # Shifted atomic-number ids.
            psi = GaussianBasis(config=cfg, name="gaussian_basis")(distance, atom_types)
            bias_3d = GaussianBias(config=cfg, name="gaussian_bias")(psi)
            centrality = Centrality(config=cfg, name="centrality")(psi, atom_mask)
            # No 3D terms without real coordinates: a pair's bias needs both atoms' (padding
            # pairs, whose keys attention masks out anyway, get 0 too).
            pair_has_coords = coord_mask[:, None, :, None] & coord_mask[:, None, None, :]
            bias_3d = jnp.where(pair_has_coords, bias_3d, 0.0)
            centrality = jnp.where(coord_mask[..., None], centrality, 0.0)

        if not use_3d:
            atom_bias, node_term = spd_bias + edge_bias, degree
        elif not use_2d:
            atom_bias, node_term = bias_3d, centrality
        else:  # SPEC 4 blend; default (no masks given) = all 3D.
            if pair_modality is None:
                pair_modality = jnp.full(spd.shape[-2:], PAIR_3D, jnp.int32)
            node_blend_3d = coord_mask if node_blend_3d is None else node_blend_3d & coord_mask
            atom_bias = blend_pair_bias(pair_modality, spd_bias, edge_bias, bias_3d)
            node_term = jnp.where(node_blend_3d[..., None], centrality, degree)
        atom_bias = atom_bias.astype(jnp.float32)

        token, token_bias = GraphToken(config=cfg, name="graph_token")()
        batch_size = atom_features.shape[0]
        tokens = jnp.broadcast_to(token, (batch_size, 1, cfg.hidden_dim))
        x = jnp.concatenate([tokens, atoms + node_term], axis=1)
        x = LayerNorm32(epsilon=cfg.layer_norm_eps, dtype=cfg.jnp_dtype, name="input_norm")(x)
        x = Dropout(rate=cfg.embedding_dropout)(x, deterministic=not train)

        # SPEC 2: one bias tensor, computed once, added in every layer. The graph token is a key
        # of every row, so no row is ever fully masked.
        bias = with_graph_token_bias(atom_bias, token_bias)
        key_mask = jnp.concatenate([jnp.ones((batch_size, 1), bool), atom_mask], axis=1)
        # `train` is static under remat: it selects Python branches (dropout on or off).
        layer_cls = nn.remat(EncoderLayer, static_argnums=(4,)) if cfg.remat else EncoderLayer
        for i, rate in enumerate(drop_path_rates(cfg.num_layers, cfg.stochastic_depth)):
            layer = layer_cls(config=cfg, drop_path_rate=rate, name=f"layer_{i}")
            x = layer(x, bias, key_mask, train)

        x = x.astype(jnp.float32)
        atom_repr = jnp.where(atom_mask[..., None], x[:, 1:], 0.0)
        return EncoderOutput(graph_repr=x[:, 0], atom_repr=atom_repr, atom_bias=atom_bias)
