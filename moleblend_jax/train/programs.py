"""The programs a pretraining run compiles, built in one place for the loop and for sizing a
run ahead of time (train/aot.py): the state initialisation, the train step and the held-out
eval step, all over one mesh."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from moleblend_jax import model as model_lib
from moleblend_jax.data.batching import pad_batch
from moleblend_jax.train import optim, sharding
from moleblend_jax.train import state as state_lib
from moleblend_jax.train.evaluate import jit_eval_step
from moleblend_jax.train.step import jit_train_step, pretraining_loss_fn


def _fed_arrays(num_atoms: int) -> dict:
    """One all-padding molecule of what the step loop feeds (`pad_batch`'s arrays less the
    host-only ones): the shapes and dtypes of docs/batch_format.md, from their one source."""
    one = pad_batch([], num_atoms, 1)
    return {key: value for key, value in one.items() if key not in sharding.HOST_ONLY_KEYS}


def dummy_batch(batch_size: int, num_atoms: int) -> dict[str, jax.Array]:
    """An all-padding batch of `_fed_arrays`, made on the devices (no host transfer): the
    example every model is initialised on (its values never reach the params)."""
    return {
        key: jnp.zeros((batch_size, *value.shape[1:]), value.dtype)
        for key, value in _fed_arrays(num_atoms).items()
    }


def batch_spec(batch_size: int, num_atoms: int, mesh: Mesh) -> dict[str, jax.ShapeDtypeStruct]:
    """The global batch the step loop feeds, as shapes split along the batch dimension over
    `mesh`: what compiles a step ahead of time."""
    batch_sharding = sharding.batch_sharding(mesh)
    return {
        key: jax.ShapeDtypeStruct(
            (batch_size, *value.shape[1:]), value.dtype, sharding=batch_sharding
        )
        for key, value in _fed_arrays(num_atoms).items()
    }


def train_buckets(config: ml_collections.ConfigDict, num_processes: int) -> tuple[int, ...]:
    """The padded atom counts the run compiles a train step for: every bucket on one process;
    only the largest when several processes must feed the same shape at every step."""
    buckets = tuple(config.data.buckets)
    return buckets[-1:] if num_processes > 1 else buckets


class Programs(NamedTuple):
    """The model and the jitted programs of a pretraining run over one mesh."""

    model: model_lib.MoleBlend
    schedule: optax.Schedule
    tx: optax.GradientTransformation
    layout: state_lib.StateLayout
    train_step: jax.stages.Wrapped  # (state, batch) -> (state, metrics); state donated.
    eval_step: jax.stages.Wrapped  # (params, batch, rng) -> held-out metrics.


def build_programs(config: ml_collections.ConfigDict, mesh: Mesh) -> Programs:
    """Everything the pretraining loop compiles, jitted over `mesh` (nothing compiled yet)."""
    model = model_lib.MoleBlend(config=config.model)
    schedule, tx = optim.pretraining_optimizer(config)
    layout = state_lib.state_layout(
        model,
        tx,
        dummy_batch(mesh.size, config.data.buckets[0]),
        jax.random.PRNGKey(config.seed),
        mesh,
        config.mesh.rules,
        state_lib.optimizer_state_axis(config.mesh),
    )
    train_step = jit_train_step(
        pretraining_loss_fn(model, dict(config.loss_weights)),
        tx,
        schedule,
        layout.shardings,
        mesh,
        config.grad_accum_steps,
    )
    eval_step = jit_eval_step(model, config.loss_weights, layout.shardings.params, mesh)
    return Programs(model, schedule, tx, layout, train_step, eval_step)
