"""Shared building blocks: initialisers with logical axes, fp32 LayerNorm, gathers, safe norms."""

import functools
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from moleblend_jax.model import precision

Dtype = Any
# Finite "minus infinity" for masked attention logits: a fully masked row stays finite (SPEC 9).
LARGE_NEGATIVE = -1e9


def normal_init(std: float) -> nn.initializers.Initializer:
    """N(0, std) for every Linear and Embedding weight (SPEC 2)."""
    return nn.initializers.normal(stddev=std)


def padded_embedding_init(std: float) -> nn.initializers.Initializer:
    """N(0, std) with row 0 of the row axis (-2) zeroed: id 0 is padding (SPEC 1-2)."""

    def init(key, shape, dtype=jnp.float32):
        table = std * jax.random.normal(key, shape, dtype)
        return table.at[..., 0, :].set(0.0)

    return init


def without_pad_row(table: jax.Array) -> jax.Array:
    """[..., V, D] table -> the same with row 0 of axis -2 exactly zero, and no gradient there.

    As torch's `padding_idx=0` (SPEC 2): padded ids (atoms, hops, self and unreachable pairs)
    add exactly nothing at every step, whatever the stored row holds.
    """
    return table.at[..., 0, :].set(0.0)


def logical(init, axes: Sequence[str | None]):
    """Attach logical axis names to an initialiser (STYLE: Linen + logical partitioning)."""
    return nn.with_logical_partitioning(init, tuple(axes))


def dense(
    features: int,
    axes: tuple[str | None, str | None],
    *,
    std: float,
    dtype: Dtype,
    use_bias: bool = True,
    name: str | None = None,
) -> nn.Dense:
    """Linear layer: fp32 N(0, std) kernel with logical `axes`, zero bias; the matmul takes
    `dtype` operands and returns float32 (model/precision.py)."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        dot_general=precision.dot_general(dtype),
        kernel_init=logical(normal_init(std), axes),
        bias_init=logical(nn.initializers.zeros_init(), (axes[-1],)),
        name=name,
    )


class LayerNorm32(nn.Module):
    """LayerNorm with fp32 statistics and params; output cast to `dtype` (SPEC 2, STYLE)."""

    epsilon: float
    dtype: Dtype = jnp.float32
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """[..., D] -> [..., D] normalised over D."""
        features = x.shape[-1]
        scale = self.param(
            "scale", logical(nn.initializers.ones_init(), (self.axis_name,)), (features,)
        )
        bias = self.param(
            "bias", logical(nn.initializers.zeros_init(), (self.axis_name,)), (features,)
        )
        x = x.astype(jnp.float32)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        variance = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(variance + self.epsilon) * scale + bias
        return y.astype(self.dtype)


class MultiFeatureEmbed(nn.Module):
    """F categorical features, one [V, D] table each (row 0 = pad, always zero), summed/averaged.

    The tables live in one param "embedding" of shape [F, V, D].
    """

    num_features: int
    vocab_size: int
    features: int
    std: float
    axes: tuple[str | None, str | None] = ("vocab", "embed")
    reduce: str = "sum"  # "sum" or "mean" over the F features.

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        """[..., F] int32 shifted ids -> [..., D] float32."""
        table = self.param(
            "embedding",
            logical(padded_embedding_init(self.std), (None, *self.axes)),
            (self.num_features, self.vocab_size, self.features),
            jnp.float32,
        )
        offsets = jnp.arange(self.num_features, dtype=jnp.int32) * self.vocab_size
        ids = jnp.clip(ids, 0, self.vocab_size - 1) + offsets
        flat_table = without_pad_row(table).reshape(
            self.num_features * self.vocab_size, self.features
        )
        # Ids are clipped above, so skip jnp.take's out-of-bounds fill (a select per element).
        vectors = flat_table.at[ids].get(mode="promise_in_bounds")  # [..., F, D]
        return vectors.sum(-2) if self.reduce == "sum" else vectors.mean(-2)


def safe_norm(x: jax.Array, axis: int = -1, keepdims: bool = False) -> jax.Array:
    """Euclidean norm with a finite (zero) gradient at the zero vector (SPEC 9)."""
    squared = jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims)
    nonzero = squared > 0
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, squared, 1.0)), 0.0)


def pair_geometry(coords: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[B, N, 3] coords -> ([B, N, N] distances, [B, N, N, 3] unit vectors r_i -> r_j).

    Coincident (and self) pairs get distance 0 and a zero unit vector, with finite gradients.
    """
    coords = coords.astype(jnp.float32)
    delta = coords[:, None, :, :] - coords[:, :, None, :]  # [b, i, j] = r_j - r_i
    distance = safe_norm(delta)
    unit = delta / jnp.where(distance > 0, distance, 1.0)[..., None]
    return distance, unit


def masked_softmax(logits: jax.Array, key_mask: jax.Array) -> jax.Array:
    """[B, H, Q, K] fp32 logits, [B, K] bool -> fp32 probabilities over K.

    Masked keys get LARGE_NEGATIVE (finite), so a fully masked row is uniform, never NaN.
    """
    logits = jnp.where(key_mask[:, None, None, :], logits.astype(jnp.float32), LARGE_NEGATIVE)
    return jax.nn.softmax(logits, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def attention_probs16(
    logits: jax.Array, bias: jax.Array, key_mask: jax.Array, keep: jax.Array, keep_prob: float
) -> jax.Array:
    """`masked_softmax(logits + bias)` then dropout (`keep`, kept ones over `keep_prob`), for
    16-bit attention: [B, H, Q, K] 16-bit logits, fp32 bias, [B, K] bool keys, bool `keep`
    (broadcastable) -> [B, H, Q, K] probabilities in the logits' dtype.

    The math is fp32 inside, the input and the result are 16-bit, and the dropout is applied
    in the same pass. The backward pass keeps the fp32 probabilities, as autodiff of the fp32
    softmax does (16-bit ones would cost ~2% of the logits' gradient where its terms cancel).
    These [B, H, T, T] arrays are the bulk of an attention layer's memory traffic.
    """
    return _attention_probs16_fwd(logits, bias, key_mask, keep, keep_prob)[0]


def _attention_probs16_fwd(logits, bias, key_mask, keep, keep_prob):
    probs = masked_softmax(logits.astype(jnp.float32) + bias, key_mask)
    dropped = jnp.where(keep, probs / keep_prob, 0.0).astype(logits.dtype)
    tags = (jnp.zeros((0,), logits.dtype), jnp.zeros((0,), bias.dtype))
    return dropped, (probs, key_mask, keep, tags)


def _attention_probs16_bwd(keep_prob, residuals, g):
    probs, key_mask, keep, (logits_tag, bias_tag) = residuals
    d_probs = jnp.where(keep, g.astype(jnp.float32) / keep_prob, 0.0)
    d_logits = probs * (d_probs - jnp.sum(d_probs * probs, axis=-1, keepdims=True))
    # Masked keys took a constant, not the logit: no gradient (as masked_softmax's `where`).
    d_logits = jnp.where(key_mask[:, None, None, :], d_logits, 0.0)
    return d_logits.astype(logits_tag.dtype), d_logits.astype(bias_tag.dtype), None, None


attention_probs16.defvjp(_attention_probs16_fwd, _attention_probs16_bwd)


class Dropout(nn.Module):
    """Dropout on the "dropout" rng stream whose keep mask is cheap and computed once.

    XLA otherwise fuses the cheap-looking threefry mask into every consumer and recomputes
    it there (the backward pass, broadcasts over extra axes), which cost ~15% of a CPU step.
    Each 32-bit threefry draw gives two 16-bit uniforms (half the hashing); an element is
    dropped when its uniform is below round(rate * 2^16), and kept ones are scaled by the
    inverse of that quantised keep probability, so the expectation stays exact.
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        """[...] -> [...], elements zeroed with prob ~`rate`, the rest scaled by 1/keep_prob."""
        if deterministic or self.rate == 0.0:
            return x
        keep = self.keep(x.shape)
        return jnp.where(keep, x / jnp.asarray(self.keep_prob, x.dtype), jnp.zeros_like(x))

    def keep(self, shape: tuple[int, ...]) -> jax.Array:
        """A fresh bool keep mask of `shape` (True with probability 1 - ~rate)."""
        return jax.lax.optimization_barrier(keep_mask(self.make_rng("dropout"), self.rate, shape))

    @property
    def keep_prob(self) -> float:
        """The quantised keep probability, which kept elements are divided by."""
        return kept_fraction(drop_threshold(self.rate))


_UNIFORM_LEVELS = 2**16  # Dropout draws 16-bit uniforms.


def drop_threshold(rate: float) -> int:
    """16-bit uniforms below this are dropped: `rate` rounded to a multiple of 1/2^16."""
    return round(rate * _UNIFORM_LEVELS)


def kept_fraction(threshold: int) -> float:
    """The keep probability of a `drop_threshold`, which kept elements are divided by."""
    return 1.0 - threshold / _UNIFORM_LEVELS


def keep_mask(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
    """-> bool `shape`, each True with probability 1 - round(rate * 2^16) / 2^16.

    Along the last axis (length n), element e takes the low half of 32-bit draw e and element
    e + ceil(n / 2) the high half. The draws have `shape`'s leading axes, so a mask sharded
    along the batch is drawn where it is used (a flat draw would be exchanged between devices).
    """
    *lead, last = shape
    bits = jax.random.bits(key, (*lead, (last + 1) // 2), jnp.uint32)
    threshold = drop_threshold(rate)
    keep = jnp.concatenate([(bits & 0xFFFF) >= threshold, (bits >> 16) >= threshold], axis=-1)
    return keep[..., :last]


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as torch.nn.functional.gelu.

    Written with erf: jax.nn.gelu uses erfc, whose exp makes it ~2x dearer on CPU.
    """
    return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(math.sqrt(0.5), x.dtype)))
