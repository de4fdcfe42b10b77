"""Gradient accumulation (config.grad_accum_steps): K scanned microbatches == the full batch."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from moleblend_jax.train import sharding
from moleblend_jax.train.state import TrainState
from moleblend_jax.train.step import jit_train_step, microbatches

BATCH, FEATURES = 32, 6


def per_molecule_loss(params, batch, rngs):
    """Mean over molecules of a squared error: a mean of per-molecule terms, as the test needs."""
    del rngs
    preds = jnp.tanh(batch["x"] @ params["w"] + params["b"])
    per_molecule = jnp.sum(jnp.square(preds - batch["y"]), axis=-1)
    loss = jnp.mean(per_molecule)
    return loss, {"loss": loss, "mean_pred": jnp.mean(preds)}


def _state(tx):
    params = {
        "w": jax.random.normal(jax.random.PRNGKey(1), (FEATURES, 2)),
        "b": jnp.zeros((2,)),
    }
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(0),
    )


def _batch():
    rng = np.random.default_rng(0)
    return {
        "x": rng.normal(size=(BATCH, FEATURES)).astype(np.float32),
        "y": rng.normal(size=(BATCH, 2)).astype(np.float32),
    }


def _update(grad_accum_steps, mesh):
    tx = optax.adamw(1e-2)
    state = _state(tx)
    step = jit_train_step(
        per_molecule_loss,
        tx,
        optax.constant_schedule(1e-2),
        jax.tree.map(lambda _: sharding.replicated(mesh), state),
        mesh,
        grad_accum_steps,
    )
    new_state, metrics = step(state, sharding.global_batch(_batch(), mesh))
    return jax.device_get(new_state.params), jax.device_get(metrics)


@pytest.fixture(scope="module")
def mesh():
    config = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
    return sharding.make_mesh(config, jax.devices())


@pytest.mark.parametrize("grad_accum_steps", [2, 4])
def test_microbatches_give_the_full_batch_update(mesh, grad_accum_steps):
    full_params, full_metrics = _update(1, mesh)
    params, metrics = _update(grad_accum_steps, mesh)
    for name in ("w", "b"):
        np.testing.assert_allclose(params[name], full_params[name], rtol=1e-6, atol=1e-6)
    for name in ("loss", "grad_norm", "mean_pred"):
        np.testing.assert_allclose(metrics[name], full_metrics[name], rtol=1e-6, atol=1e-6)
    assert not np.allclose(full_params["w"], _state(optax.adamw(1e-2)).params["w"])


def test_microbatches_are_strided_so_each_device_keeps_its_share():
    batch = {"x": np.arange(8)}
    np.testing.assert_array_equal(microbatches(batch, 2)["x"], [[0, 2, 4, 6], [1, 3, 5, 7]])
    with pytest.raises(ValueError, match="does not split into 3"):
        microbatches(batch, 3)
