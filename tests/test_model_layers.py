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
    # Both 16-bit halves of a draw are used, and they are not copies of each other.
    flat, half = keep.reshape(-1), (keep.size + 1) // 2
    assert 0 < np.mean(flat[: keep.size - half] != flat[half:])


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
