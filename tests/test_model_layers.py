"""Dropout's cheap keep mask and the erf GELU."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moleblend_jax.model import layers


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_mask_drops_at_the_rate(rate):
    shape = (64, 33, 33)  # Odd size: the last 32-bit draw is used for one element only.
    keep = np.asarray(layers.keep_mask(jax.random.PRNGKey(0), rate, shape))
    assert keep.shape == shape and keep.dtype == bool
    dropped = 1.0 - keep.mean()
    sigma = math.sqrt(rate * (1 - rate) / keep.size)
    assert abs(dropped - rate) < 5 * sigma
    # Both 16-bit halves of a draw are used (the last axis' two halves), and they are not
    # copies of each other.
    half = (shape[-1] + 1) // 2
    assert 0 < np.mean(keep[..., : shape[-1] - half] != keep[..., half:])


def test_keep_mask_is_a_function_of_the_key():
    a = layers.keep_mask(jax.random.PRNGKey(1), 0.1, (8, 9))
    b = layers.keep_mask(jax.random.PRNGKey(1), 0.1, (8, 9))
    c = layers.keep_mask(jax.random.PRNGKey(2), 0.1, (8, 9))
    np.testing.assert_array_equal(a, b)
    assert np.any(np.asarray(a) != np.asarray(c))


def test_dropout_scales_kept_values_so_the_mean_is_kept():
    x = jnp.ones((256, 257))
    dropout = layers.Dropout(rate=0.1)
    out = np.asarray(dropout.apply({}, x, False, rngs={"dropout": jax.random.PRNGKey(3)}))
    keep_prob = 1.0 - round(0.1 * 2**16) / 2**16
    np.testing.assert_allclose(np.unique(out), [0.0, 1.0 / keep_prob], rtol=1e-6)
    assert abs(out.mean() - 1.0) < 5 * math.sqrt(0.1 / 0.9 / x.size)
    np.testing.assert_array_equal(dropout.apply({}, x, True), x)


def test_gelu_is_the_exact_erf_gelu():
    x = np.linspace(-12.0, 12.0, 2001)
    expected = np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x])
    np.testing.assert_allclose(layers.gelu(jnp.asarray(x, jnp.float32)), expected, atol=2e-6)
    grad = jax.grad(lambda v: layers.gelu(v).sum())(jnp.asarray([0.0, 1.0], jnp.float32))
    cdf_1 = 0.5 * (1.0 + math.erf(1.0 / math.sqrt(2.0)))
    pdf_1 = math.exp(-0.5) / math.sqrt(2.0 * math.pi)
    np.testing.assert_allclose(grad, [0.5, cdf_1 + pdf_1], rtol=1e-5)


def test_keep_mask_of_a_batch_sharded_shape_is_drawn_on_each_device():
    """A mask split along the batch over a mesh needs no collective: each device draws its
    own rows (a flat draw reshaped to the batch was exchanged with all-to-alls)."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))
    batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    draw = jax.jit(lambda key: layers.keep_mask(key, 0.1, (16, 4, 33, 33)), out_shardings=batch)
    hlo = draw.lower(jax.random.PRNGKey(0)).compile().as_text()
    for collective in ("all-to-all", "all-gather", "collective-permute", "all-reduce"):
        assert collective not in hlo


def _reference_probs(logits, bias, key_mask, keep, keep_prob):
    probs = layers.masked_softmax(logits.astype(jnp.float32) + bias, key_mask)
    return jnp.where(keep, probs / keep_prob, 0.0)


def test_attention_probs16_is_the_fp32_softmax_and_dropout_rounded_to_bf16():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    shape = (3, 2, 7, 7)
    logits = (3 * jax.random.normal(k1, shape)).astype(jnp.bfloat16)
    bias = jax.random.normal(k2, shape)
    # Molecule 0 has 5 real tokens, molecule 1 all 7, molecule 2 none (a padding molecule).
    key_mask = jnp.arange(7)[None, :] < jnp.array([[5], [7], [0]])
    keep = layers.keep_mask(k3, 0.3, shape)
    keep_prob = 0.7
    out = layers.attention_probs16(logits, bias, key_mask, keep, keep_prob)
    assert out.dtype == jnp.bfloat16
    expected = _reference_probs(logits, bias, key_mask, keep, keep_prob)
    np.testing.assert_allclose(np.float32(out), expected, rtol=2**-8, atol=1e-6)
    assert np.all(np.float32(out)[0, ..., 5:] == 0)  # Masked keys.

    # Gradients: those of the fp32 reference (the bf16 logits' rounded to bf16).
    # Cotangents exact in bf16, so that the bf16 result's cotangent is not rounded.
    weights = jax.random.normal(k1, shape).astype(jnp.bfloat16).astype(jnp.float32)
    grads = jax.grad(
        lambda lg, b: jnp.sum(
            layers.attention_probs16(lg, b, key_mask, keep, keep_prob).astype(jnp.float32) * weights
        ),
        argnums=(0, 1),
    )(logits, bias)
    expected = jax.grad(
        lambda lg, b: jnp.sum(_reference_probs(lg, b, key_mask, keep, keep_prob) * weights),
        argnums=(0, 1),
    )(logits.astype(jnp.float32), bias)
    assert grads[0].dtype == jnp.bfloat16 and grads[1].dtype == jnp.float32
    np.testing.assert_allclose(grads[1], expected[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.float32(grads[0]), expected[1], rtol=2**-8, atol=1e-7)
    # No gradient into masked keys, nor anywhere in a padding molecule's rows.
    assert np.all(np.asarray(grads[1])[0, ..., 5:] == 0) and np.all(np.asarray(grads[1])[2] == 0)
