"""The train state pytree, its sharded layout, and its initialisation in that layout."""

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec


@flax.struct.dataclass
class TrainState:
    """Everything a checkpoint needs to continue training bit-for-bit.

    `rng` is a raw uint32[2] key; each step folds the step number into it. `step` is also the
    input-pipeline position: the number of global batches consumed.
    """

    step: jax.Array
    params: Any
    opt_state: optax.OptState
    rng: jax.Array


class StateLayout(NamedTuple):
    """A train state before any device memory is used.

    abstract: TrainState of ShapeDtypeStructs carrying their target shardings (a restore
      target); shardings: TrainState of NamedShardings; init_program: key -> the initialised
      TrainState, jitted with `out_shardings` (lowered ahead of time by train/aot.py);
      init_rng: the key `init()` passes it.
    """

    abstract: TrainState
    shardings: TrainState
    init_program: Callable[[jax.Array], TrainState]
    init_rng: jax.Array

    def init(self) -> TrainState:
        """The initialised state, directly in its sharded layout."""
        return self.init_program(self.init_rng)


def state_layout(
    model: nn.Module,
    tx: optax.GradientTransformation,
    example_batch: Mapping[str, jax.Array],
    rng: jax.Array,
    mesh: Mesh,
    logical_axis_rules,
    optimizer_state_axis: str | None = None,
) -> StateLayout:
    """Shapes and shardings of the state from `jax.eval_shape` (nothing is allocated).

    With `optimizer_state_axis` (a mesh axis the parameters are replicated over), each
    optimizer-state array is also split over that axis (`split_over`): ZeRO-1's sharding.

    Calling `.init()` initialises directly in the sharded layout, so no device ever holds a
    full copy of a parameter that the fsdp axis shards; a resumed run never calls it and
    restores into `.abstract` instead, so it holds one state, not two.
    """
    init_rng, train_rng = jax.random.split(rng)
    init_fn = _make_init_fn(model, tx, example_batch, train_rng)
    abstract_boxed = jax.eval_shape(init_fn, init_rng)
    logical_specs = nn.get_partition_spec(abstract_boxed)
    shardings = nn.logical_to_mesh_sharding(logical_specs, mesh, logical_axis_rules)
    if optimizer_state_axis is not None:
        opt_state = jax.tree.map(
            lambda shape, sharding: split_over(sharding, shape.shape, optimizer_state_axis),
            nn.unbox(abstract_boxed.opt_state),
            shardings.opt_state,
        )
        shardings = shardings.replace(opt_state=opt_state)
    abstract = jax.tree.map(
        lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=sharding),
        nn.unbox(abstract_boxed),
        shardings,
    )
    init_program = jax.jit(
        lambda key: nn.unbox(init_fn(key)),
        out_shardings=shardings,
        compiler_options=_init_compiler_options(mesh),
    )
    return StateLayout(abstract, shardings, init_program, init_rng)


def optimizer_state_axis(mesh_config) -> str | None:
    """The mesh axis `state_layout` splits the optimizer state over: "data" when
    config.mesh.shard_optimizer_state (ZeRO-1), else None."""
    return "data" if mesh_config.shard_optimizer_state else None


def split_over(sharding: NamedSharding, shape: tuple[int, ...], axis: str) -> NamedSharding:
    """`sharding` with the most major dimension of `shape` that `axis` (times any mesh axes
    already splitting it) divides split over `axis` too; unchanged when none is (scalars,
    small vectors).

    For optimizer state (ZeRO-1): each device then updates its share of the moments and
    parameters and XLA all-gathers the new parameters, instead of every device reading and
    writing the whole state. The most major dimension, because its slices of a row-major
    parameter are contiguous: slicing a minor one made XLA copy every parameter transposed
    on TPU (0.8 GB of the paper's step per chip on v5e-256).
    """
    mesh_shape = sharding.mesh.shape
    spec = [*sharding.spec, *[None] * (len(shape) - len(sharding.spec))]
    entries = [() if e is None else (e,) if isinstance(e, str) else tuple(e) for e in spec]
    if mesh_shape[axis] == 1 or any(axis in entry for entry in entries):
        return sharding
    for dim, entry in enumerate(entries):
        ways = math.prod(mesh_shape[a] for a in (*entry, axis))
        if shape[dim] % ways == 0:
            spec[dim] = (*entry, axis) if entry else axis
            return NamedSharding(sharding.mesh, PartitionSpec(*spec))
    return sharding


def _init_compiler_options(mesh: Mesh) -> dict | None:
    """Initialisation runs once, so on CPU it is compiled for compile time: the ~7 fusions of
    random draws per parameter leaf take XLA:CPU's optimising backend 2-3x longer to compile
    than they take to run unoptimised (tiny: 10 s vs 4 s to compile, 0.5 s to run). The
    draws differ from optimised code only in float rounding (~1 ulp)."""
    if mesh.devices.flat[0].platform != "cpu":
        return None
    return {"xla_backend_optimization_level": 0}


def count_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))


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
