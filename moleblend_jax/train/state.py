"""The train state pytree and its sharded initialisation."""

from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint needs to continue training bit-for-bit.

    `rng` is a raw uint32[2] key; each step folds the step number into it.
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    rng: jax.Array


def create_sharded_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    example_batch: Mapping[str, jax.Array],
    rng: jax.Array,
    mesh: Mesh,
    logical_axis_rules,
) -> tuple[TrainState, Any]:
    """Initialises the state directly in its sharded layout.

    Shapes and logical partition specs come from `jax.eval_shape` (nothing is allocated); the
    real initialisation is jitted with `out_shardings`, so no device ever holds a full copy
    of a parameter that the fsdp axis shards.

    Returns:
      (state, state_shardings) with `state_shardings` a TrainState of NamedShardings.
    """
    init_rng, train_rng = jax.random.split(rng)
    init_fn = _make_init_fn(model, tx, example_batch, train_rng)
    abstract_boxed = jax.eval_shape(init_fn, init_rng)
    logical_specs = nn.get_partition_spec(abstract_boxed)
    shardings = nn.logical_to_mesh_sharding(logical_specs, mesh, logical_axis_rules)
    state = jax.jit(lambda key: nn.unbox(init_fn(key)), out_shardings=shardings)(init_rng)
    return state, shardings


def abstract_state(state_shardings: Any, model, tx, example_batch) -> TrainState:
    """ShapeDtypeStructs with target shardings, for restoring a checkpoint in place."""
    init_fn = _make_init_fn(model, tx, example_batch, jax.random.PRNGKey(0))
    shapes = nn.unbox(jax.eval_shape(init_fn, jax.random.PRNGKey(0)))
    return jax.tree.map(
        lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding),
        shapes,
        state_shardings,
    )


def _make_init_fn(model, tx, example_batch, train_rng) -> Callable[[jax.Array], TrainState]:
    def init_fn(init_rng: jax.Array) -> TrainState:
        params = model.init({"params": init_rng}, example_batch, train=False)["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=train_rng,
        )

    return init_fn
