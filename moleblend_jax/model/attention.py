"""Multi-head self-attention with an additive per-head bias and key padding mask (SPEC 2)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from moleblend_jax.model.layers import Dropout, Dtype, dense, masked_softmax


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
    """[B, L, D] -> [B, L, H, D/H]."""
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


class BiasedSelfAttention(nn.Module):
    """softmax(q k^T / sqrt(d) + bias, masked keys) v, logits and softmax in fp32 (SPEC 2)."""

    num_heads: int
    dropout_rate: float
    dtype: Dtype
    init_std: float = 0.02

    @nn.compact
    def __call__(
        self, x: jax.Array, bias: jax.Array, key_mask: jax.Array, train: bool
    ) -> jax.Array:
        """[B, L, D] states, [B, H, L, L] fp32 bias, [B, L] bool keys -> [B, L, D]."""
        hidden = x.shape[-1]
        head_dim = hidden // self.num_heads

        def proj(name):
            return dense(hidden, ("embed", "kv"), std=self.init_std, dtype=self.dtype, name=name)

        q = split_heads(proj("query")(x), self.num_heads) * jnp.asarray(head_dim**-0.5, self.dtype)
        k = split_heads(proj("key")(x), self.num_heads)
        v = split_heads(proj("value")(x), self.num_heads)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        probs = masked_softmax(logits + bias, key_mask)
        probs = Dropout(self.dropout_rate)(probs, deterministic=not train)
        context = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(self.dtype), v)
        context = context.reshape(*x.shape[:-1], hidden)
        return dense(hidden, ("kv", "embed"), std=self.init_std, dtype=self.dtype, name="out")(
            context
        )
