"""Multi-head self-attention with an additive per-head bias and key padding mask (SPEC 2)."""

import logging

import flax.linen as nn
import jax
import jax.numpy as jnp

from moleblend_jax.model import pallas_attention, platform, precision
from moleblend_jax.model.config import ModelConfig
from moleblend_jax.model.layers import (
    Dropout,
    attention_probs16,
    dense,
    drop_threshold,
    masked_softmax,
)


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
    """[B, L, D] -> [B, L, H, D/H]."""
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


_LOGGED: set[str] = set()


def _log_once(message: str) -> None:
    """The attention path chosen, logged once per process rather than per layer and trace."""
    if message not in _LOGGED:
        _LOGGED.add(message)
        logging.info(message)


def fused_attention_blocker(cfg: ModelConfig, head_dim: int, train: bool) -> str | None:
    """Why `jax.nn.dot_product_attention`'s cuDNN kernel cannot run this attention, or None.

    cuDNN's fused attention takes the per-head bias and key lengths, 16-bit operands and
    head dims that are multiples of 8, but no attention-probability dropout.
    """
    if platform.target() != "gpu":
        return f"backend {platform.target()}"
    if cfg.jnp_dtype not in (jnp.bfloat16, jnp.float16):
        return f"dtype {cfg.dtype}"
    if head_dim % 8 or head_dim > 128:
        return f"head dim {head_dim}"
    if train and cfg.attention_dropout > 0:
        return f"attention dropout {cfg.attention_dropout} in training"
    return None


def fused_attention(q, k, v, bias, key_mask, dtype, implementation="cudnn"):
    """softmax(q k^T / sqrt(d) + bias) v in one kernel: [B, L, H, d] q, k, v (scaled q not
    expected), [B, H, L, L] bias, [B, L] bool keys, padding last (docs/batch_format.md)
    -> [B, L, H, d] float32."""
    lengths = jnp.sum(key_mask, axis=-1).astype(jnp.int32)
    out = jax.nn.dot_product_attention(
        q.astype(dtype),
        k.astype(dtype),
        v.astype(dtype),
        bias=bias.astype(dtype),
        key_value_seq_lengths=lengths,
        implementation=implementation,
    )
    return out.astype(jnp.float32)


class BiasedSelfAttention(nn.Module):
    """softmax(q k^T / sqrt(d) + bias, masked keys) v, logits and softmax in fp32 (SPEC 2).

    config.num_heads heads, attention-prob dropout config.attention_dropout. On TPU the
    Pallas kernels of model/pallas_attention.py; on GPU, when `fused_attention_blocker` finds
    nothing in the way, cuDNN's fused kernel.
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

        q = split_heads(proj("query")(x), heads)
        k = split_heads(proj("key")(x), heads)
        v = split_heads(proj("value")(x), heads)
        if platform.pallas_kernels():
            context = self._tpu_kernel(q, k, v, bias, key_mask, train)
            return proj("out", ("kv", "embed"))(context.reshape(*x.shape[:-1], hidden))
        blocker = fused_attention_blocker(cfg, head_dim, train)
        context = None
        if blocker is None:
            try:
                context = fused_attention(q, k, v, bias, key_mask, dtype)
            except (ValueError, NotImplementedError, RuntimeError) as error:  # At trace time.
                blocker = f"cuDNN refused: {error}"
        if platform.target() == "gpu":  # Elsewhere there is no choice to report.
            _log_once(
                f"Attention: XLA einsums (no fused kernel: {blocker})."
                if blocker
                else "Attention: cuDNN fused (jax.nn.dot_product_attention)."
            )
        if context is None:
            q = q * head_dim**-0.5
            logits = precision.einsum("bqhd,bkhd->bhqk", q, k, dtype)
            dropout = Dropout(cfg.attention_dropout)
            if precision.is_mixed(dtype):
                if train and cfg.attention_dropout > 0:
                    keep, keep_prob = dropout.keep(logits.shape), dropout.keep_prob
                else:
                    keep, keep_prob = jnp.ones((), bool), 1.0
                probs = attention_probs16(logits.astype(dtype), bias, key_mask, keep, keep_prob)
            else:
                probs = masked_softmax(logits + bias, key_mask)
                probs = dropout(probs, deterministic=not train)
            context = precision.einsum("bhqk,bkhd->bqhd", probs, v, dtype)
        return proj("out", ("kv", "embed"))(context.reshape(*x.shape[:-1], hidden))

    def _tpu_kernel(self, q, k, v, bias, key_mask, train: bool) -> jax.Array:
        """[B, L, H, d] q, k, v -> [B, L, H, d] context through `pallas_attention`."""
        rate = self.config.attention_dropout if train else 0.0
        seed = None
        if rate > 0:
            bits = jax.random.bits(self.make_rng("dropout"), (), jnp.uint32)
            seed = jax.lax.bitcast_convert_type(bits, jnp.int32)
        dtype = self.config.jnp_dtype
        q, k, v = (t.astype(dtype) for t in (q, k, v))
        return pallas_attention.biased_attention(
            q, k, v, bias, key_mask, seed, drop_threshold(rate)
        )
