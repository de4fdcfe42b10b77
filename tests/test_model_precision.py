"""The mixed-precision policy (model/precision.py): bf16 operands, fp32 accumulation."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from moleblend_jax.model import precision
from moleblend_jax.model.layers import dense

BF16 = jnp.bfloat16


def _rounded(x):
    """float32 values exactly representable in bf16 (so products of them are exact in fp32)."""
    return np.asarray(jnp.asarray(x, BF16).astype(jnp.float32))


def _random(key, shape):
    return jax.random.normal(jax.random.PRNGKey(key), shape, jnp.float32)


@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 5), (2, 3, 4, 5)])
def test_matmul_forward_and_both_gradients_use_bf16_operands(shape):
    x, w, g = _random(0, shape), _random(1, (5, 7)), _random(2, shape[:-1] + (7,))
    y, vjp = jax.vjp(lambda a, b: precision.matmul(a, b, BF16), x, w)
    dx, dw = vjp(g)
    assert y.dtype == dx.dtype == dw.dtype == jnp.float32
    xr, wr, gr = _rounded(x), _rounded(w), _rounded(g)
    np.testing.assert_allclose(y, xr @ wr, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dx, gr @ wr.T, rtol=1e-6, atol=1e-6)
    lead = tuple(range(len(shape) - 1))
    np.testing.assert_allclose(dw, np.tensordot(xr, gr, (lead, lead)), rtol=1e-5, atol=1e-5)
    # And not the fp32 product: bf16 rounding of the operands is visible.
    assert np.max(np.abs(np.asarray(y) - np.asarray(x) @ np.asarray(w))) > 1e-4


def test_matmul_cotangent_dtype_follows_the_primal():
    x, w = _random(0, (3, 4)).astype(BF16), _random(1, (4, 2))
    dx, dw = jax.grad(lambda a, b: precision.matmul(a, b, BF16).sum(), argnums=(0, 1))(x, w)
    assert (dx.dtype, dw.dtype) == (BF16, jnp.float32)


def test_einsum_gradients_follow_the_transposed_specs():
    q, k = _random(0, (2, 5, 3, 4)), _random(1, (2, 6, 3, 4))
    g = _random(2, (2, 3, 5, 6))
    spec = "bqhd,bkhd->bhqk"
    y, vjp = jax.vjp(lambda a, b: precision.einsum(spec, a, b, BF16), q, k)
    dq, dk = vjp(g)
    qr, kr, gr = _rounded(q), _rounded(k), _rounded(g)
    np.testing.assert_allclose(y, np.einsum(spec, qr, kr), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dq, np.einsum("bhqk,bkhd->bqhd", gr, kr), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dk, np.einsum("bqhd,bhqk->bkhd", qr, gr), rtol=1e-5, atol=1e-5)


def test_float32_is_the_plain_op():
    x, w = _random(0, (2, 3, 5)), _random(1, (5, 7))
    np.testing.assert_array_equal(precision.matmul(x, w, jnp.float32), x @ w)
    np.testing.assert_array_equal(
        precision.einsum("bld,de->ble", x, w, jnp.float32), jnp.einsum("bld,de->ble", x, w)
    )
    assert precision.dot_general(jnp.float32) is jax.lax.dot_general


@pytest.mark.parametrize("spec", ["ab,bc", "aa,ab->b", "ab,bc->acd", "ab,cd->ad"])
def test_einsum_refuses_specs_without_a_transposed_form(spec):
    with pytest.raises(ValueError, match="einsum spec"):
        precision.einsum(spec, jnp.ones((2, 2)), jnp.ones((2, 2)), BF16)


def _dot_types(hlo: str) -> list[tuple[str, str, str]]:
    """(lhs, rhs, result) element types of every dot_general in StableHLO text."""
    tensor = r"tensor<(?:\d+x)*(\w+)>"
    pattern = rf"stablehlo\.dot_general.*?: \({tensor}, {tensor}\) -> {tensor}"
    return re.findall(pattern, hlo)


def test_a_bf16_dense_layer_compiles_every_dot_as_bf16_by_bf16_to_fp32():
    layer = dense(16, ("embed", "mlp"), std=0.02, dtype=BF16)
    x = _random(0, (4, 8, 32))
    params = nn.unbox(layer.init(jax.random.PRNGKey(0), x))
    assert params["params"]["kernel"].dtype == jnp.float32

    def loss(p, x):
        return jnp.sum(jnp.square(layer.apply(p, x)))

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).as_text()
    types = _dot_types(hlo)
    assert len(types) == 3, hlo  # forward, input gradient, weight gradient
    assert set(types) == {("bf16", "bf16", "f32")}


# ---------------------------------------------------------------- the whole pretraining model
def _model_loss_and_grads(**overrides):
    import model_testing as mt

    from moleblend_jax.model import MoleBlend
    from moleblend_jax.train.losses import pretraining_losses

    model = MoleBlend(mt.small_config(**overrides))
    batch = mt.make_batch(mt.default_molecules(), num_atoms=6, num_molecules=4)
    params = mt.random_params(model, batch, scale=0.2)
    rngs = {k: jax.random.PRNGKey(i) for i, k in enumerate(("dropout", "blend", "noise"))}

    def loss(p):
        outputs = model.apply({"params": p}, batch, train=True, rngs=rngs)
        return pretraining_losses(outputs, batch, dict(mt.loss_weights()))[0]

    return jax.jit(jax.value_and_grad(loss))(params)


def _max_relative_difference(a, b):
    flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
    scale = max(float(jnp.max(jnp.abs(x))) for x in flat_b)
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(flat_a, flat_b, strict=True)) / scale


@pytest.fixture(scope="module")
def fp32_loss_and_grads():
    return _model_loss_and_grads()


def test_remat_recomputes_the_same_loss_and_gradients(fp32_loss_and_grads):
    loss, grads = fp32_loss_and_grads
    remat_loss, remat_grads = _model_loss_and_grads(remat=True)
    np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
    assert _max_relative_difference(remat_grads, grads) < 1e-5


def test_bf16_model_trains_within_bf16_rounding_of_fp32(fp32_loss_and_grads):
    """Loose: random weights of std 0.2 make every rounding count; the 300-step loss curves
    (docs/model.md, "Mixed precision") are the real check."""
    loss, grads = fp32_loss_and_grads
    bf16_loss, bf16_grads = _model_loss_and_grads(dtype="bfloat16")
    assert jax.tree.map(lambda g: g.dtype, bf16_grads) == jax.tree.map(lambda g: g.dtype, grads)
    np.testing.assert_allclose(bf16_loss, loss, rtol=2e-2)
    assert 1e-3 < _max_relative_difference(bf16_grads, grads) < 0.15


def test_fused_attention_arguments_match_the_einsum_path():
    """The cuDNN call's arguments (bias layout, key lengths, scale), checked through
    jax.nn.dot_product_attention's XLA implementation, which takes the same ones."""
    from moleblend_jax.model.attention import fused_attention
    from moleblend_jax.model.layers import masked_softmax

    b, length, heads, d = 2, 5, 3, 8
    q, k, v = (_random(i, (b, length, heads, d)) for i in range(3))
    bias = _random(3, (b, heads, length, length))
    key_mask = jnp.arange(length)[None, :] < jnp.array([[5], [3]])
    out = fused_attention(q, k, v, bias, key_mask, jnp.float32, implementation="xla")
    probs = masked_softmax(jnp.einsum("bqhd,bkhd->bhqk", q * d**-0.5, k) + bias, key_mask)
    np.testing.assert_allclose(out, jnp.einsum("bhqk,bkhd->bqhd", probs, v), atol=1e-5)
