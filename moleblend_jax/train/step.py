"""One optimizer step, shared by pretraining and fine-tuning: loss, backward, clip, AdamW."""

import functools
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from moleblend_jax.train import sharding
from moleblend_jax.train.losses import pretraining_losses
from moleblend_jax.train.state import TrainState

# (params, batch, rngs) -> (scalar float32 loss, dict of float32 scalar metrics)
LossFn = Callable[[dict, Mapping[str, jax.Array], dict], tuple[jax.Array, dict]]


def step_rngs(rng: jax.Array, step: jax.Array) -> dict[str, jax.Array]:
    """Per-step keys for the model's random streams, reproducible from (rng, step)."""
    dropout, blend, noise = jax.random.split(jax.random.fold_in(rng, step), 3)
    return {"dropout": dropout, "blend": blend, "noise": noise}


def pretraining_loss_fn(model: nn.Module, loss_weights: Mapping[str, float]) -> LossFn:
    """Blended forward pass and the weighted 2D + 3D reconstruction losses (SPEC 4-5)."""

    def loss_fn(params, batch, rngs):
        outputs = model.apply({"params": params}, batch, train=True, rngs=rngs)
        return pretraining_losses(outputs, batch, loss_weights)

    return loss_fn


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Returns the updated state and float32 scalar metrics.

    A step whose loss or gradient norm is not finite leaves the parameters and optimizer
    state unchanged (the loop then stops the run), so they are never poisoned even though
    their buffers are donated.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, metrics), grads = grad_fn(state.params, batch, step_rngs(state.rng, state.step))
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    is_finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(is_finite, n, o), new, old)
    new_state = state.replace(
        step=state.step + 1,
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
    )
    metrics = dict(metrics)
    metrics["grad_norm"] = grad_norm
    metrics["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
    metrics["is_finite"] = is_finite.astype(jnp.float32)
    return new_state, metrics


def jit_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    state_shardings,
    mesh: jax.sharding.Mesh,
):
    """`train_step` compiled over `mesh`: state in its shardings (donated), batch split along
    the batch dimension over all devices, metrics replicated."""
    return jax.jit(
        functools.partial(train_step, loss_fn=loss_fn, tx=tx, schedule=schedule),
        in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )
