"""Biased self-attention as one Pallas TPU kernel per direction (issue 29).

XLA writes attention's [B, H, T, T] logits, probabilities, dropout mask and their gradients
to HBM between fusions, ~0.95 GB per layer of the paper's TPU step. These kernels keep them in
on-chip memory: the forward pass reads q, k, v and the bias and writes the context; the
backward pass recomputes the probabilities (T is a molecule's token count, so a whole [T, T]
block per head fits) and writes dq, dk, dv and the bias gradient once.

Layout: one grid step per molecule, its q, k, v and context as [T, H * d] (the projections'
own layout, heads side by side on the 128 lanes, so no transposes) and its [H, T, T] bias;
each head is a static lane slice.

Dropout is drawn in the kernel from a counter-based hash of (seed, molecule, head, query,
key), so the backward pass redraws the forward's mask instead of reading it, and the mask of
a molecule does not depend on how the batch is split over devices.

The same math without Pallas is `reference_attention`; off TPU the kernels run in Pallas's
interpreter only for tests (`interpret=True`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from moleblend_jax.model import platform
from moleblend_jax.model.layers import LARGE_NEGATIVE, kept_fraction


def _u32(value: int) -> np.int32:
    """An unsigned 32-bit constant as the int32 with its bits (kernels hash in int32)."""
    return np.array(value, np.uint32).view(np.int32)


def _mix(x: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser on int32 bits (multiplication wraps as uint32's)."""
    x = x ^ jax.lax.shift_right_logical(x, 16)
    x = x * _u32(0x85EBCA6B)
    x = x ^ jax.lax.shift_right_logical(x, 13)
    x = x * _u32(0xC2B2AE35)
    return x ^ jax.lax.shift_right_logical(x, 16)


def keep_mask(seed, row, threshold: int, shape) -> jax.Array:
    """Bool dropout keep mask of `shape` = [..., T, T] attention probabilities.

    `row` (int32, broadcastable to `shape`) is each element's flat (molecule * heads + head)
    index. Element (row, q, k) is kept when the top 16 bits of hash(seed, row, q, k) are >=
    `threshold` (layers.Dropout's quantisation of the rate): the same draw wherever it is made.
    """
    tokens = shape[-1]
    query = jax.lax.broadcasted_iota(jnp.int32, shape, len(shape) - 2)
    key = jax.lax.broadcasted_iota(jnp.int32, shape, len(shape) - 1)
    counter = (row * tokens + query) * tokens + key
    bits = _mix(_mix(counter ^ seed) + _u32(0x9E3779B9))
    return jax.lax.shift_right_logical(bits, 16) >= threshold


class _Kernels:
    """The forward and backward kernel bodies for one static setting. A grid step is one
    molecule: its [T, H * d] q, k, v (heads side by side on the lanes) and [H, T, T] bias."""

    def __init__(self, num_heads: int, head_dim: int, threshold: int, interpret: bool):
        self.num_heads, self.head_dim = num_heads, head_dim
        self.scale, self.threshold = head_dim**-0.5, threshold
        self.keep_prob = kept_fraction(threshold)
        self.interpret = interpret
        self._contract = functools.partial(platform.kernel_dot, interpret=interpret)

    def _probs(self, q, k, bias, key_mask):
        """One head: [T, d] q and k, [T, T] bias, [1, T] fp32 key mask -> fp32 [T, T]
        softmax over keys of q k^T * scale + bias (masked keys at LARGE_NEGATIVE)."""
        logits = self._contract(q, k, 1, 1) * self.scale + bias.astype(jnp.float32)
        logits = jnp.where(key_mask > 0, logits, LARGE_NEGATIVE)
        weights = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
        return weights / jnp.sum(weights, axis=-1, keepdims=True)

    def _heads(self, seeds_ref, key_mask_ref, bias_ref, q_ref, k_ref):
        """Per head: (its lane slice, its [T, d] q and k, fp32 probs [T, T], keep mask or
        None)."""
        key_mask = key_mask_ref[0]
        molecule = seeds_ref[1] + pl.program_id(0)
        for head in range(self.num_heads):
            lanes = pl.ds(head * self.head_dim, self.head_dim)
            q, k = q_ref[0, :, lanes], k_ref[0, :, lanes]
            probs = self._probs(q, k, bias_ref[0, head], key_mask)
            keep = None
            if self.threshold:
                row = molecule * self.num_heads + head
                keep = keep_mask(seeds_ref[0], row, self.threshold, probs.shape)
            yield lanes, q, k, probs, keep

    def _dropped(self, values, keep):
        return values if keep is None else jnp.where(keep, values / self.keep_prob, 0.0)

    def forward(self, seeds_ref, key_mask_ref, bias_ref, q_ref, k_ref, v_ref, out_ref):
        heads = self._heads(seeds_ref, key_mask_ref, bias_ref, q_ref, k_ref)
        for lanes, _, _, probs, keep in heads:
            dropped = self._dropped(probs, keep).astype(v_ref.dtype)
            out_ref[0, :, lanes] = self._contract(dropped, v_ref[0, :, lanes], 1, 0).astype(
                out_ref.dtype
            )

    def backward(
        self, seeds_ref, key_mask_ref, bias_ref, q_ref, k_ref, v_ref, d_out_ref,
        d_bias_ref, d_q_ref, d_k_ref, d_v_ref,
    ):  # fmt: skip
        key_mask = key_mask_ref[0]
        heads = self._heads(seeds_ref, key_mask_ref, bias_ref, q_ref, k_ref)
        for head, (lanes, q, k, probs, keep) in enumerate(heads):
            v, d_out = v_ref[0, :, lanes], d_out_ref[0, :, lanes]
            dropped = self._dropped(probs, keep).astype(d_out.dtype)
            d_v_ref[0, :, lanes] = self._contract(dropped, d_out, 0, 0).astype(d_v_ref.dtype)
            d_probs = self._dropped(self._contract(d_out, v, 1, 1), keep)
            d_logits = probs * (d_probs - jnp.sum(d_probs * probs, axis=-1, keepdims=True))
            # Masked keys took a constant, not the logit: no gradient (as layers.masked_softmax).
            d_logits = jnp.where(key_mask > 0, d_logits, 0.0)
            d_bias_ref[0, head] = d_logits.astype(d_bias_ref.dtype)
            d_scaled = (d_logits * self.scale).astype(q.dtype)
            d_q_ref[0, :, lanes] = self._contract(d_scaled, k, 1, 0).astype(d_q_ref.dtype)
            d_k_ref[0, :, lanes] = self._contract(d_scaled, q, 0, 0).astype(d_k_ref.dtype)


def _call(kernels: _Kernels, backward: bool, seeds, key_mask, bias, *tensors):
    """Runs one direction over grid (molecule,): [B, T, H * d] tensors, [B, H, T, T] bias."""
    q = tensors[0]
    batch, tokens, width = q.shape
    heads = bias.shape[1]
    per_token = pl.BlockSpec((1, tokens, width), lambda b, seeds: (b, 0, 0))
    pair = pl.BlockSpec((1, heads, tokens, tokens), lambda b, seeds: (b, 0, 0, 0))
    keys = pl.BlockSpec((1, 1, tokens), lambda b, seeds: (b, 0, 0))
    token_shape = jax.ShapeDtypeStruct(q.shape, q.dtype)
    if backward:
        body, out_specs = kernels.backward, [pair, per_token, per_token, per_token]
        out_shape = [jax.ShapeDtypeStruct(bias.shape, bias.dtype), *[token_shape] * 3]
    else:
        body, out_specs, out_shape = kernels.forward, per_token, token_shape
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=1,
        grid=(batch,),
        in_specs=[keys, pair] + [per_token] * len(tensors),
        out_specs=out_specs,
    )
    return pl.pallas_call(
        body,
        grid_spec=grid_spec,
        out_shape=out_shape,
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",)),
        interpret=kernels.interpret,
    )(seeds, key_mask, bias, *tensors)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(kernels, seeds, key_mask, bias, q, k, v):
    return _call(kernels, False, seeds, key_mask, bias, q, k, v)


def _attention_fwd(kernels, seeds, key_mask, bias, q, k, v):
    out = _call(kernels, False, seeds, key_mask, bias, q, k, v)
    return out, (seeds, key_mask, bias, q, k, v)


def _attention_bwd(kernels, residuals, d_out):
    seeds, key_mask, bias, q, k, v = residuals
    d_bias, d_q, d_k, d_v = _call(kernels, True, seeds, key_mask, bias, q, k, v, d_out)
    return None, None, d_bias, d_q, d_k, d_v


_attention.defvjp(_attention_fwd, _attention_bwd)


def biased_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: jax.Array,
    key_mask: jax.Array,
    seed: jax.Array | None = None,
    drop_threshold: int = 0,
    interpret: bool = False,
) -> jax.Array:
    """[B, T, H, d] q, k, v (q unscaled), [B, H, T, T] bias, [B, T] bool keys -> the
    [B, T, H, d] context softmax(q k^T / sqrt(d) + bias) v, in q's dtype.

    The math is fp32 inside; the bias gradient comes back in the bias's dtype. Dropout on the
    probabilities when `drop_threshold` > 0: a 16-bit uniform per element, dropped below the
    threshold (layers.Dropout's quantisation), from int32 `seed`. Over a mesh set by
    `platform.batch_sharded`, runs per device on its molecules (shard_map).
    """
    batch, tokens, heads, head_dim = q.shape
    kernels = _Kernels(heads, head_dim, drop_threshold, interpret or platform.interpreting())
    seed = jnp.zeros((), jnp.int32) if seed is None else seed
    key_mask = key_mask.astype(jnp.float32)[:, None, :]
    # Heads side by side on the lanes: a free reshape, and lane-dense blocks (a [T, d] block
    # per head would pad d to 128 lanes).
    q, k, v = (t.reshape(batch, tokens, heads * head_dim) for t in (q, k, v))

    def run(seed, key_mask, bias, q, k, v, first_molecule):
        seeds = jnp.stack([seed, jnp.asarray(first_molecule, jnp.int32)])
        return _attention(kernels, seeds, key_mask, bias, q, k, v)

    out = platform.per_batch_shard(run, (key_mask, bias, q, k, v), replicated=(seed,))
    return out.reshape(batch, tokens, heads, head_dim)


def reference_attention(q, k, v, bias, key_mask, seed=None, drop_threshold=0):
    """`biased_attention`'s math in plain jax.numpy (same layouts, same dropout mask)."""
    batch, tokens, heads, head_dim = q.shape
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    logits = logits * head_dim**-0.5 + bias.astype(jnp.float32)
    probs = jax.nn.softmax(jnp.where(key_mask[:, None, None, :], logits, LARGE_NEGATIVE), axis=-1)
    if drop_threshold:
        rows = jnp.arange(batch * heads, dtype=jnp.int32).reshape(batch, heads, 1, 1)
        keep = keep_mask(seed, rows, drop_threshold, probs.shape)
        probs = jnp.where(keep, probs / kept_fraction(drop_threshold), 0.0)
    probs = probs.astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v, preferred_element_type=jnp.float32).astype(
        q.dtype
    )
