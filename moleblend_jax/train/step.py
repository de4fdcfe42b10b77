"""One optimizer step, shared by pretraining and fine-tuning: loss, backward, clip, AdamW."""

import functools
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import PartitionSpec

from moleblend_jax.model import platform
from moleblend_jax.train import sharding
from moleblend_jax.train.losses import pretraining_losses
from moleblend_jax.train.sharding import DCN_AXIS
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


def microbatches(batch: Mapping[str, jax.Array], num_microbatches: int) -> dict:
    """[B, ...] arrays -> [K, B / K, ...]; microbatch k holds rows k, K + k, 2K + k, ...

    Strided rather than contiguous: the batch axis is split over devices in contiguous
    blocks, so every microbatch keeps an equal share of every device's rows.
    """

    def split(x):
        if x.shape[0] % num_microbatches:
            raise ValueError(
                f"Batch of {x.shape[0]} does not split into {num_microbatches} microbatches."
            )
        shape = (x.shape[0] // num_microbatches, num_microbatches, *x.shape[1:])
        return jnp.swapaxes(x.reshape(shape), 0, 1)

    return {k: split(v) for k, v in batch.items()}


def accumulated_loss_and_grads(
    loss_fn: LossFn, params, batch: Mapping[str, jax.Array], rngs: dict, num_microbatches: int
):
    """`value_and_grad(loss_fn)` as the mean over K microbatches, scanned in one program.

    Peak activation memory is one microbatch's. Each microbatch normalises its own loss, as
    each GPU of a data-parallel run does (the original's 4 x 1024), so the update equals the
    full batch's exactly when the loss is a mean of per-molecule terms. Microbatch k draws its
    randomness from `rngs` folded with k. K = 1 is the plain full-batch gradient.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if num_microbatches == 1:
        return grad_fn(params, batch, rngs)

    def accumulate(totals, inputs):
        index, micro = inputs
        micro_rngs = {k: jax.random.fold_in(r, index) for k, r in rngs.items()}
        (loss, metrics), grads = grad_fn(params, micro, micro_rngs)
        return jax.tree.map(jnp.add, totals, ((loss, metrics), grads)), None

    micro = microbatches(batch, num_microbatches)
    shapes = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro), rngs)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    totals, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(num_microbatches), micro))
    return jax.tree.map(lambda total: total / num_microbatches, totals)


def across_slices(
    loss_and_grads: Callable, mesh: jax.sharding.Mesh
) -> Callable[[dict, Mapping[str, jax.Array], dict], tuple]:
    """`loss_and_grads(params, batch, rngs)` as plain data parallelism over every device of a
    multi-slice mesh: each device on its own molecules, then their (loss, metrics) and
    gradients averaged in ONE all-reduce (XLA splits it into ICI within the slices and one
    transfer over the data-centre network). Left to itself XLA reduces each gradient across
    slices on its own: one DCN transfer per parameter, dozens per layer.

    Needs replicated parameters (mesh.fsdp = 1). Each device normalises its own loss (as each
    microbatch does) and draws its random streams from `rngs` folded with its index.
    """
    if mesh.shape.get("fsdp", 1) != 1:
        raise ValueError("Multi-slice training needs config.mesh.fsdp=1 (replicated parameters).")
    axes = tuple(mesh.axis_names)

    def per_device(params, batch, rngs):
        index = jax.lax.axis_index(axes)
        rngs = {name: jax.random.fold_in(key, index) for name, key in rngs.items()}
        with platform.batch_sharded(None, ()):  # Already per device.
            flat, unflatten = ravel_pytree(loss_and_grads(params, batch, rngs))
        return unflatten(jax.lax.pmean(flat, axes))

    return jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(axes), PartitionSpec()),
        out_specs=PartitionSpec(),
        check_vma=False,
    )


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    grad_accum_steps: int = 1,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Returns the updated state and float32 scalar metrics (means over the microbatches of
    `accumulated_loss_and_grads` when grad_accum_steps > 1).

    Over a `mesh` spanning several slices the gradients cross slices once (`across_slices`).
    A step whose loss or gradient norm is not finite leaves the parameters and optimizer
    state unchanged (the loop then stops the run), so they are never poisoned even though
    their buffers are donated.
    """
    loss_and_grads = functools.partial(
        accumulated_loss_and_grads, loss_fn, num_microbatches=grad_accum_steps
    )
    if mesh is not None and mesh.shape.get(DCN_AXIS, 1) > 1:
        loss_and_grads = across_slices(loss_and_grads, mesh)
    (loss, metrics), grads = loss_and_grads(state.params, batch, step_rngs(state.rng, state.step))
    grad_norm = optax.global_norm(grads)
    is_finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def update(params, opt_state):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    # A branch rather than a select of new and old state: the update then reads and writes
    # each state buffer once, in place (a select re-read and re-wrote all of them).
    params, opt_state = jax.lax.cond(
        is_finite, update, lambda *old: old, state.params, state.opt_state
    )
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
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
    grad_accum_steps: int = 1,
):
    """`train_step` compiled over `mesh`: state in its shardings (donated), batch split along
    the batch dimension over all devices, metrics replicated."""
    step = functools.partial(
        train_step,
        loss_fn=loss_fn,
        tx=tx,
        schedule=schedule,
        grad_accum_steps=grad_accum_steps,
        mesh=mesh,
    )
    return jax.jit(
        sharding.traced_with_batch_mesh(step, mesh, "train_step"),
        in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )


def jit_apply(model, mesh: jax.sharding.Mesh | None = None):
    """`jax.jit` of `model.apply({"params": params}, batch)` with the model's defaults (no
    dropout): the one forward that evaluation, prediction and embedding compile. Given the
    `mesh` its batches are split over, the model's kernels run per device (as in training)."""

    def apply(params, batch):
        return model.apply({"params": params}, batch)

    return jax.jit(sharding.traced_with_batch_mesh(apply, mesh, "apply"))
