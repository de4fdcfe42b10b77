"""Multi-head self-attention with an additive per-head bias and key padding mask (SPEC 2)."""

import flax.linen as nn
import jax

from moleblend_jax.model import precision
from moleblend_jax.model.config import ModelConfig
from moleblend_jax.model.layers import Dropout, dense, masked_softmax


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
    """[B, L, D] -> [B, L, H, D/H]."""
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


class BiasedSelfAttention(nn.Module):
    """softmax(q k^T / sqrt(d) + bias, masked keys) v, logits and softmax in fp32 (SPEC 2).

    config.num_heads heads, attention-prob dropout config.attention_dropout.
    """

    config: ModelConfig

    @nn.compact
    def __call__(
        self, x: jax.Array, bias: jax.Array, key_mask: jax.Array, train: bool
    ) -> jax.Array:
        """[B, L, D] states, [B, H, L, L] fp32 bias, [B, L] bool keys -> [B, L, D]."""
        cfg = self.config
        dtype, heads, hidden = cfg.jnp_dtype, cfg.num_heads, x.shape[-1]
        head_dim = hidden // heads

        def proj(name, axes=("embed", "kv")):
            return dense(hidden, axes, std=cfg.init_std, dtype=dtype, name=name)

        q = split_heads(proj("query")(x), heads) * head_dim**-0.5
        k = split_heads(proj("key")(x), heads)
        v = split_heads(proj("value")(x), heads)
        logits = precision.einsum("bqhd,bkhd->bhqk", q, k, dtype)
        probs = masked_softmax(logits + bias, key_mask)
        probs = Dropout(cfg.attention_dropout)(probs, deterministic=not train)
        context = precision.einsum("bhqk,bkhd->bqhd", probs, v, dtype)
        return proj("out", ("kv", "embed"))(context.reshape(*x.shape[:-1], hidden))
