"""The TPU attention kernels (model/pallas_attention.py), run in Pallas's interpreter on CPU,
against their jax.numpy reference and the model's XLA attention (with the edge loss's kernels,
the whole model's kernel path against its XLA path); compiled for a TPU slice
(Mosaic) when libtpu is installed."""

import importlib.util

import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest
from train_testing import pretraining_grad_fn

from moleblend_jax.model import MoleBlend, pallas_attention, pallas_cross_entropy, platform
from moleblend_jax.model.layers import drop_threshold, masked_softmax
from moleblend_jax.train import sharding
from moleblend_jax.train.losses import pretraining_losses
from moleblend_jax.train.step import jit_apply

THRESHOLD = drop_threshold(0.1)


def _inputs(batch=2, heads=4, width=8, tokens=9, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(keys[i], (batch, tokens, heads, width), dtype) for i in range(3))
    bias = jax.random.normal(keys[3], (batch, heads, tokens, tokens), jnp.float32)
    lengths = jnp.array([tokens, 5] + [3] * (batch - 2))
    key_mask = jnp.arange(tokens)[None] < lengths[:, None]
    return q, k, v, bias, key_mask


@pytest.mark.parametrize("threshold", [0, THRESHOLD])
def test_kernels_match_the_reference_forward_and_backward(threshold):
    q, k, v, bias, key_mask = _inputs()
    seed = jnp.int32(1234)

    def kernel(q, k, v, bias):
        return pallas_attention.biased_attention(
            q, k, v, bias, key_mask, seed, threshold, interpret=True
        )

    def reference(q, k, v, bias):
        return pallas_attention.reference_attention(q, k, v, bias, key_mask, seed, threshold)

    out, kernel_vjp = jax.vjp(kernel, q, k, v, bias)
    expected, reference_vjp = jax.vjp(reference, q, k, v, bias)
    mt.assert_close_fp32(out, expected)
    cotangent = jax.random.normal(jax.random.key(5), out.shape)
    # The kernels' hand-written backward against autodiff of the reference.
    for got, want in zip(kernel_vjp(cotangent), reference_vjp(cotangent), strict=True):
        mt.assert_close_fp32(got, want)
    masked_keys = ~key_mask[:, None, None, :]
    assert np.all(np.where(masked_keys, kernel_vjp(cotangent)[3], 0.0) == 0.0)


def test_reference_is_the_models_masked_softmax_attention():
    q, k, v, bias, key_mask = _inputs()
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[3]) + bias
    probs = masked_softmax(logits, key_mask)
    expected = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
    mt.assert_close_fp32(pallas_attention.reference_attention(q, k, v, bias, key_mask), expected)


def test_dropout_mask_rate_seeds_and_rows():
    shape = (4, 8, 65, 65)
    rows = jnp.arange(32, dtype=jnp.int32).reshape(4, 8, 1, 1)
    keep = np.asarray(pallas_attention.keep_mask(jnp.int32(7), rows, THRESHOLD, shape))
    assert abs(keep.mean() - (1 - THRESHOLD / 2**16)) < 0.005  # 135,200 draws: ~5 sigma.
    # Rows, queries and keys are not correlated: neighbours agree as often as chance does.
    p = keep.mean()
    for a, b in [(keep[:, :, 1:], keep[:, :, :-1]), (keep[..., 1:], keep[..., :-1])]:
        assert abs((a == b).mean() - (p * p + (1 - p) ** 2)) < 0.01
    assert abs((keep[:, 1:] == keep[:, :-1]).mean() - (p * p + (1 - p) ** 2)) < 0.01
    other = np.asarray(pallas_attention.keep_mask(jnp.int32(8), rows, THRESHOLD, shape))
    assert 0.1 < (keep != other).mean() < 0.25
    # A block drawn alone (as a kernel draws it) equals its place in the whole.
    block = pallas_attention.keep_mask(jnp.int32(7), jnp.int32(2 * 8 + 5), THRESHOLD, shape[2:])
    np.testing.assert_array_equal(np.asarray(block), keep[2, 5])


def test_a_batch_split_over_devices_draws_each_molecules_own_mask():
    q, k, v, bias, key_mask = _inputs(batch=8)
    seed = jnp.int32(99)
    whole = pallas_attention.biased_attention(
        q, k, v, bias, key_mask, seed, THRESHOLD, interpret=True
    )
    mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)

    @jax.jit
    def split(q, k, v, bias, key_mask):
        with platform.batch_sharded(mesh, ("data", "fsdp")):
            return pallas_attention.biased_attention(
                q, k, v, bias, key_mask, seed, THRESHOLD, interpret=True
            )

    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    args = jax.device_put((q, k, v, bias, key_mask), sharded)
    mt.assert_close_fp32(split(*args), whole)


def test_the_models_kernel_path_equals_its_xla_path():
    # Dropout off (the two paths draw different masks): same loss, outputs and gradients.
    model = MoleBlend(
        mt.small_model_config(attention_dropout=0.0, activation_dropout=0.0, residual_dropout=0.0)
    )
    batch = mt.make_batch([mt.two_fragments(), mt.ring5(), mt.chain3()], num_atoms=8)
    params = mt.random_params(model, batch, scale=0.2)
    (loss, (_, outputs)), grads = pretraining_grad_fn(model, batch, params)(
        params, jax.random.key(0, impl="rbg")
    )
    with platform.interpreted():
        (tpu_loss, (_, tpu_outputs)), tpu_grads = pretraining_grad_fn(model, batch, params)(
            params, jax.random.key(0, impl="rbg")
        )
    mt.assert_close_fp32(tpu_loss, loss)
    # The classification heads hand the loss their logits' factors (pallas_cross_entropy).
    spd_logits, edge_logits = tpu_outputs["spd_logits"], tpu_outputs["edge_logits"]
    assert isinstance(spd_logits, pallas_cross_entropy.FactoredLogits)
    tpu_outputs["spd_logits"] = spd_logits.dense()[:, :, 0].transpose(0, 1, 3, 2)
    tpu_outputs["edge_logits"] = edge_logits.dense()
    for got, want in zip(jax.tree.leaves(tpu_outputs), jax.tree.leaves(outputs), strict=True):
        mt.assert_close_fp32(got, want)
    for got, want in zip(jax.tree.leaves(tpu_grads), jax.tree.leaves(grads), strict=True):
        mt.assert_close_fp32(got, want)


def test_the_forward_over_a_mesh_runs_the_kernels_per_device():
    # Evaluation and prediction (`jit_apply`) split the batch as training does.
    model = MoleBlend(mt.small_model_config())
    molecules = [mt.two_fragments(), mt.ring5(), mt.chain3(), mt.long_chain(6)] * 2
    batch = mt.make_batch(molecules, num_atoms=8)
    params = mt.random_params(model, batch, scale=0.2)
    auto = (jax.sharding.AxisType.Auto,) * 3
    mesh = jax.make_mesh((1, 4, 2), sharding.MESH_AXES, axis_types=auto)
    with platform.interpreted():
        whole = jit_apply(model)(params, batch)
        split_apply = jit_apply(model, mesh)
        lowered = split_apply.lower(params, batch).as_text()
        split = split_apply(params, batch)
    assert "shard_map" in lowered or "sdy.manual_computation" in lowered
    for key in ("graph_repr", "atom_repr", "direction", "denoise"):
        mt.assert_close_fp32(split[key], whole[key])


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed")
def test_the_kernels_compile_for_tpu_at_the_papers_shape():
    from moleblend_jax.train import aot

    (device, *_) = aot.topology_devices("v5e:2x2")
    replicated = jax.sharding.NamedSharding(
        jax.sharding.Mesh([device], ("d",)), jax.sharding.PartitionSpec()
    )
    batch, heads, width, tokens = 16, 32, 24, 65  # 16 molecules of <= 64 atoms per chip, base.

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=replicated)

    def loss(q, k, v, bias, key_mask, seed):
        out = pallas_attention.biased_attention(q, k, v, bias, key_mask, seed, THRESHOLD)
        return out.astype(jnp.float32).sum()

    head = spec((batch, tokens, heads, width), jnp.bfloat16)
    pair = spec((batch, heads, tokens, tokens), jnp.float32)
    compiled = (
        jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
        .lower(head, head, head, pair, spec((batch, tokens), bool), spec((), jnp.int32))
        .compile()
    )
    assert "tpu_custom_call" in compiled.as_text()


def test_in_bf16_the_kernels_stay_as_near_fp32_as_xla_attention():
    batch = mt.make_batch([mt.two_fragments(), mt.ring5(), mt.chain3()], num_atoms=8)
    no_dropout = dict(attention_dropout=0.0, activation_dropout=0.0, residual_dropout=0.0)
    model32 = MoleBlend(mt.small_model_config(**no_dropout))
    params = mt.random_params(model32, batch, scale=0.2)
    model16 = MoleBlend(mt.small_model_config(dtype="bfloat16", **no_dropout))
    key = jax.random.key(0, impl="rbg")

    def loss_and_grads(model):
        def loss_fn(params):
            rngs = dict(zip(("dropout", "blend", "noise"), jax.random.split(key, 3), strict=True))
            outputs = model.apply({"params": params}, batch, train=True, rngs=rngs)
            return pretraining_losses(outputs, batch, mt.loss_weights())[0]

        # (Optimised XLA:CPU: its unoptimised backend has no bf16 x bf16 -> fp32 dot.)
        loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
        return float(loss), np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)])

    loss32, grads32 = loss_and_grads(model32)
    xla_loss, xla_grads = loss_and_grads(model16)
    with platform.interpreted():
        tpu_loss, tpu_grads = loss_and_grads(model16)

    def grad_error(grads):
        return np.linalg.norm(grads - grads32) / np.linalg.norm(grads32)

    # Measured: loss 9.1034 fp32, 9.0951 XLA bf16, 9.1198 kernels bf16 (attention and the
    # heads' cross entropy); gradient errors 1.9% (XLA) and 1.5% (kernels).
    assert abs(xla_loss - loss32) < 5e-3 * loss32 and abs(tpu_loss - loss32) < 5e-3 * loss32
    assert grad_error(tpu_grads) <= 1.25 * grad_error(xla_grads)
