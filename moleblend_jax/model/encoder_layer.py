"""One post-LN Transformer-M layer (SPEC 2) with per-sample stochastic depth."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from moleblend_jax.model.attention import BiasedSelfAttention
from moleblend_jax.model.layers import Dropout, Dtype, LayerNorm32, dense, gelu


class DropPath(nn.Module):
    """Per-sample stochastic depth: drop a sample's whole branch with prob `rate`, else scale."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """[B, ...] branch output -> [B, ...]."""
        if not train or self.rate == 0.0:
            return x
        keep_prob = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        keep = jax.random.bernoulli(self.make_rng("dropout"), keep_prob, shape)
        return jnp.where(keep, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros_like(x))


class EncoderLayer(nn.Module):
    """x = LN(x + DropPath(Attn(x))); x = LN(x + DropPath(FFN(x))) (SPEC 2, post-LN)."""

    num_heads: int
    ffn_dim: int
    attention_dropout: float
    activation_dropout: float
    residual_dropout: float
    drop_path_rate: float
    layer_norm_eps: float
    dtype: Dtype
    init_std: float = 0.02

    @nn.compact
    def __call__(
        self, x: jax.Array, bias: jax.Array, key_mask: jax.Array, train: bool
    ) -> jax.Array:
        """[B, L, D] states, [B, H, L, L] fp32 bias, [B, L] bool -> [B, L, D]."""
        hidden = x.shape[-1]
        deterministic = not train
        attended = BiasedSelfAttention(
            self.num_heads, self.attention_dropout, self.dtype, self.init_std, name="attention"
        )(x, bias, key_mask, train)
        attended = Dropout(self.residual_dropout)(attended, deterministic=deterministic)
        attended = DropPath(self.drop_path_rate, name="attention_drop_path")(attended, train)
        x = LayerNorm32(self.layer_norm_eps, self.dtype, name="attention_norm")(x + attended)

        ffn = dense(self.ffn_dim, ("embed", "mlp"), std=self.init_std, dtype=self.dtype, name="fc1")
        out = dense(hidden, ("mlp", "embed"), std=self.init_std, dtype=self.dtype, name="fc2")
        h = Dropout(self.activation_dropout)(gelu(ffn(x)), deterministic=deterministic)
        h = Dropout(self.residual_dropout)(out(h), deterministic=deterministic)
        h = DropPath(self.drop_path_rate, name="ffn_drop_path")(h, train)
        return LayerNorm32(self.layer_norm_eps, self.dtype, name="ffn_norm")(x + h)
