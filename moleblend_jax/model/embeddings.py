"""Node inputs (SPEC 2): atom embedding, degree embedding, graph token and its attention bias."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from moleblend_jax.model.config import ModelConfig
from moleblend_jax.model.layers import MultiFeatureEmbed, logical, normal_init
from moleblend_jax.schema import NUM_ATOM_FEATURES

ONE_HOP_SPD_ID = 2  # Shifted SPD id of bonded pairs (hops 1 + 1).


class AtomEmbedding(nn.Module):
    """SPEC 2 atom embedding: sum of the 9 atom-feature embeddings (one table per feature)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, atom_features: jax.Array) -> jax.Array:
        """[B, N, F] int32 shifted ids -> [B, N, D] float32."""
        cfg = self.config
        return MultiFeatureEmbed(
            num_features=NUM_ATOM_FEATURES,
            vocab_size=cfg.atom_vocab_size,
            features=cfg.hidden_dim,
            std=cfg.init_std,
            name="embed",
        )(atom_features)


def atom_degree(spd: jax.Array, atom_mask: jax.Array, num_ids: int) -> jax.Array:
    """[B, N, N] shifted SPD, [B, N] bool -> [B, N] int32 shifted degree ids (0 = padding).

    Degree = number of atoms at exactly one hop; ids are degree + 1 clipped to the table.
    """
    degree = jnp.sum(spd == ONE_HOP_SPD_ID, axis=-1)
    return jnp.where(atom_mask, jnp.clip(degree + 1, 1, num_ids - 1), 0).astype(jnp.int32)


class DegreeEmbedding(nn.Module):
    """SPEC 4 2D node term: embedding of the (undirected) atom degree.

    Two tables, "in" and "out", looked up with the same id and summed, as the original's
    `in_degree_encoder` + `out_degree_encoder`. One table would compute the same function, but
    not train the same way: each of the two gets the full gradient, so the clip norm counts it
    twice and Adam moves the sum twice as far per step (docs/interop.md).
    """

    config: ModelConfig

    @nn.compact
    def __call__(self, spd: jax.Array, atom_mask: jax.Array) -> jax.Array:
        """[B, N, N] shifted SPD, [B, N] bool -> [B, N, D] float32 (zero at padding)."""
        cfg = self.config
        ids = atom_degree(spd, atom_mask, cfg.num_degree_ids)[..., None]

        def table(name: str) -> jax.Array:
            return MultiFeatureEmbed(
                num_features=1,
                vocab_size=cfg.num_degree_ids,
                features=cfg.hidden_dim,
                std=cfg.init_std,
                name=name,
            )(ids)

        return table("in") + table("out")


class GraphToken(nn.Module):
    """SPEC 2 learned graph token (readout) and its per-head attention bias t."""

    config: ModelConfig

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        """-> ([D] token embedding, [H] bias added to row 0 and column 0)."""
        init = normal_init(self.config.init_std)
        token = self.param("token", logical(init, ("embed",)), (self.config.hidden_dim,))
        bias = self.param("attention_bias", logical(init, ("heads",)), (self.config.num_heads,))
        return token, bias


def with_graph_token_bias(atom_bias: jax.Array, token_bias: jax.Array) -> jax.Array:
    """[B, H, N, N] atom-pair bias, [H] graph-token bias -> [B, H, N+1, N+1] full bias.

    As Graphormer: row 0 (including [0, 0]) and column 0 below it all equal t.
    """
    batch, heads, n, _ = atom_bias.shape
    full = jnp.broadcast_to(token_bias[None, :, None, None], (batch, heads, n + 1, n + 1))
    return full.at[:, :, 1:, 1:].set(atom_bias)
