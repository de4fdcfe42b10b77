"""The edge loss's TPU kernels (model/pallas_cross_entropy.py), run in Pallas's interpreter on
CPU, against their jax.numpy reference and the loss's own cross entropy; compiled for a TPU
slice (Mosaic) when libtpu is installed."""

import functools
import importlib.util

import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest

from moleblend_jax.model import pallas_cross_entropy as pce
from moleblend_jax.model import platform
from moleblend_jax.train.losses import cross_entropy

HOPS, CLASSES, WIDTH = 5, 24, 8


def _inputs(batch=3, num_atoms=32, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    logits = pce.FactoredLogits(
        rows=jax.random.normal(keys[0], (batch, num_atoms * HOPS * CLASSES, WIDTH)),
        cols=jax.random.normal(keys[1], (batch, num_atoms, WIDTH)),
        bias=jax.random.normal(keys[2], (HOPS, CLASSES)),
    )
    labels = jax.random.randint(keys[3], (batch, num_atoms, HOPS, num_atoms), 0, CLASSES)
    return logits, labels


def test_reference_is_the_losses_cross_entropy():
    logits, labels = _inputs()
    nll, correct = pce.reference_cross_entropy(logits, labels)
    want_nll, want_correct = cross_entropy(logits.dense(), labels, axis=3)
    mt.assert_close_fp32(nll, want_nll)
    np.testing.assert_array_equal(correct, want_correct)
    assert 0.01 < np.mean(correct) < 0.2  # Random logits: ~1 in 24 labels is the top class.


# 32 atoms: two 16-atom chunks per molecule; 24: three of 8; 6: the whole molecule.
@pytest.mark.parametrize("num_atoms", [32, 24, 6])
def test_kernels_match_the_reference_forward_and_backward(num_atoms):
    logits, labels = _inputs(num_atoms=num_atoms)

    def kernel(logits):
        return pce.cross_entropy(logits, labels, interpret=True)

    def reference(logits):
        return pce.reference_cross_entropy(logits, labels)

    (nll, correct), kernel_vjp = jax.vjp(kernel, logits)
    (want_nll, want_correct), reference_vjp = jax.vjp(reference, logits)
    mt.assert_close_fp32(nll, want_nll)
    np.testing.assert_array_equal(correct, want_correct)
    # The kernels' hand-written backward against autodiff of the reference; items with no
    # gradient (as masked pairs of the loss) must add nothing.
    d_nll = jax.random.normal(jax.random.key(5), nll.shape) * (labels % 3 > 0)
    no_correct = jnp.zeros(correct.shape, jax.dtypes.float0)
    (got,) = kernel_vjp((d_nll, no_correct))
    (want,) = reference_vjp((d_nll, no_correct))
    for name in pce.FactoredLogits._fields:
        mt.assert_close_fp32(getattr(got, name), getattr(want, name))


def test_a_batch_split_over_devices_equals_the_whole():
    logits, labels = _inputs(batch=8, num_atoms=16)
    weights = (labels % 2).astype(jnp.float32)  # Half the items count, as masked pairs do.
    mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)

    def loss(logits, labels, weights):
        nll, correct = pce.cross_entropy(logits, labels, interpret=True)
        return jnp.sum(nll * weights), correct

    whole = jax.value_and_grad(loss, has_aux=True)(logits, labels, weights)

    @jax.jit
    def split(logits, labels, weights):
        with platform.batch_sharded(mesh, ("data", "fsdp")):
            return jax.value_and_grad(loss, has_aux=True)(logits, labels, weights)

    def put(x):
        spec = jax.sharding.PartitionSpec(("data", "fsdp") if x.ndim > 2 else None)
        return jax.device_put(x, jax.sharding.NamedSharding(mesh, spec))

    got = split(*jax.tree.map(put, (logits, labels, weights)))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(whole), strict=True):
        mt.assert_close_fp32(a, b)


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed")
def test_the_kernels_compile_for_tpu_at_the_papers_shape():
    from moleblend_jax.train import aot

    (device, *_) = aot.topology_devices("v5e:2x2")
    replicated = jax.sharding.NamedSharding(
        jax.sharding.Mesh([device], ("d",)), jax.sharding.PartitionSpec()
    )
    batch, num_atoms, width = 16, 64, 32  # 16 molecules of <= 64 atoms per chip, base.

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=replicated)

    def loss(logits, labels):
        nll, correct = pce.cross_entropy(logits, labels)
        return jnp.sum(nll) + jnp.sum(correct)

    logits = pce.FactoredLogits(
        spec((batch, num_atoms * HOPS * CLASSES, width), jnp.bfloat16),
        spec((batch, num_atoms, width), jnp.bfloat16),
        spec((HOPS, CLASSES), jnp.float32),
    )
    labels = spec((batch, num_atoms, HOPS, num_atoms), jnp.int32)
    compiled = jax.jit(jax.grad(loss)).lower(logits, labels).compile()
    assert "tpu_custom_call" in compiled.as_text()


def test_classes_padded_to_the_sublane_tile_change_nothing():
    # SPD: 11 classes, one label per pair (K = 1); the kernels pad the classes to 16.
    keys = jax.random.split(jax.random.key(3), 4)
    batch, num_atoms, classes = 2, 16, 11
    logits = pce.FactoredLogits(
        rows=jax.random.normal(keys[0], (batch, num_atoms * classes, WIDTH)),
        cols=jax.random.normal(keys[1], (batch, num_atoms, WIDTH)),
        bias=jax.random.normal(keys[2], (1, classes)),
    )
    labels = jax.random.randint(keys[3], (batch, num_atoms, 1, num_atoms), 0, classes)

    def loss(fn):
        return lambda logits: jnp.sum(fn(logits, labels)[0] * (labels > 2))

    got, got_grads = jax.value_and_grad(loss(functools.partial(pce.cross_entropy, interpret=True)))(
        logits
    )
    want, want_grads = jax.value_and_grad(loss(pce.reference_cross_entropy))(logits)
    mt.assert_close_fp32(got, want)
    for a, b in zip(got_grads, want_grads, strict=True):
        mt.assert_close_fp32(a, b)
