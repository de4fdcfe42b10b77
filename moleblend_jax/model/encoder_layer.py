"""One post-LN Transformer-M layer (SPEC 2) with stochastic depth."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from moleblend_jax.model.attention import BiasedSelfAttention
from moleblend_jax.model.config import ModelConfig
from moleblend_jax.model.layers import Dropout, LayerNorm32, dense, gelu


class DropPath(nn.Module):
    """Stochastic depth: drop a branch with prob `rate` (kept ones scaled by 1 / keep prob).

    `mask` "token" (the original's): one draw per token position, shared by every molecule of
    the batch (its DropPath draws (T, 1, 1) on [T, B, C] tensors). "molecule": one draw per
    molecule, the whole molecule's branch (the usual per-sample form). docs/model.md compares.
    """

    rate: float
    mask: str = "token"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """[B, L, ...] branch output -> [B, L, ...]."""
        if not train or self.rate == 0.0:
            return x
        keep_prob = 1.0 - self.rate
        draw_axis = 1 if self.mask == "token" else 0
        shape = tuple(x.shape[draw_axis] if a == draw_axis else 1 for a in range(x.ndim))
        keep = jax.random.bernoulli(self.make_rng("dropout"), keep_prob, shape)
        return jnp.where(keep, x / jnp.asarray(keep_prob, x.dtype), jnp.zeros_like(x))


class EncoderLayer(nn.Module):
    """x = LN(x + DropPath(Attn(x))); x = LN(x + DropPath(FFN(x))) (SPEC 2, post-LN).

    `drop_path_rate` is this layer's stochastic depth (encoder.drop_path_rates).
    """

    config: ModelConfig
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(
        self, x: jax.Array, bias: jax.Array, key_mask: jax.Array, train: bool
    ) -> jax.Array:
        """[B, L, D] states, [B, H, L, L] fp32 bias, [B, L] bool -> [B, L, D]."""
        cfg = self.config
        dtype, std, hidden = cfg.jnp_dtype, cfg.init_std, x.shape[-1]
        deterministic = not train

        def norm(name):
            return LayerNorm32(epsilon=cfg.layer_norm_eps, dtype=dtype, name=name)

        def drop(rate, y):
            return Dropout(rate=rate)(y, deterministic=deterministic)

        attended = BiasedSelfAttention(config=cfg, name="attention")(x, bias, key_mask, train)
        attended = drop(cfg.residual_dropout, attended)
        attended = DropPath(
            self.drop_path_rate, cfg.stochastic_depth_mask, name="attention_drop_path"
        )(attended, train)
        x = norm("attention_norm")(x + attended)

        ffn = dense(cfg.ffn_dim, ("embed", "mlp"), std=std, dtype=dtype, name="fc1")
        out = dense(hidden, ("mlp", "embed"), std=std, dtype=dtype, name="fc2")
        h = drop(cfg.activation_dropout, gelu(ffn(x)))
        h = drop(cfg.residual_dropout, out(h))
        h = DropPath(self.drop_path_rate, cfg.stochastic_depth_mask, name="ffn_drop_path")(h, train)
        return norm("ffn_norm")(x + h)
