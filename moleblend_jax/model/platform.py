"""The platform a model is traced for, which picks platform-specific forms of a few ops.

Usually the default backend. A program compiled ahead of time for other devices (train/aot.py
compiles TPU programs on a CPU host) is traced under `compiling_for(platform)`, so it gets the
forms it would get on that platform rather than the host's.
"""

import contextlib
import contextvars

import jax
import jax.numpy as jnp

_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("target", default=None)


def target() -> str:
    """'cpu', 'gpu' or 'tpu': the platform being traced for."""
    return _TARGET.get() or jax.default_backend()


@contextlib.contextmanager
def compiling_for(platform: str):
    """Traces inside this block are for `platform` (a device's `.platform`)."""
    token = _TARGET.set(platform)
    try:
        yield
    finally:
        _TARGET.reset(token)


_BATCH_MESH: contextvars.ContextVar[tuple] = contextvars.ContextVar(
    "batch_mesh", default=(None, ())
)


def batch_mesh() -> tuple[jax.sharding.Mesh | None, tuple[str, ...]]:
    """The mesh the traced program's batch is split over and its batch axes, or (None, ()).

    Hand-written kernels (model/pallas_*.py) run per device over these axes
    (`per_batch_shard`); XLA cannot partition them itself.
    """
    return _BATCH_MESH.get()


@contextlib.contextmanager
def batch_sharded(mesh: jax.sharding.Mesh | None, axes: tuple[str, ...]):
    """Traces inside this block split dimension 0 of the batch over `mesh`'s `axes` (None:
    not split, e.g. inside a shard_map that is already per device)."""
    token = _BATCH_MESH.set((mesh, tuple(axes)))
    try:
        yield
    finally:
        _BATCH_MESH.reset(token)


def per_batch_shard(fn, sharded: tuple, replicated: tuple = ()):
    """`fn(*replicated, *sharded, first)` on each device's share of the batch (dimension 0 of
    every `sharded` array, over `batch_mesh()` through shard_map), `first` being the index of
    its first row in the whole batch; one call with first = 0 when the batch is not split.

    For hand-written kernels, which XLA cannot partition itself. Outputs are split like the
    batch.
    """
    mesh, axes = batch_mesh()
    if mesh is None or all(mesh.shape[a] == 1 for a in axes):
        return fn(*replicated, *sharded, 0)

    def per_device(*args):
        first = jax.lax.axis_index(axes) * args[len(replicated)].shape[0]
        return fn(*args, first)

    spec = jax.sharding.PartitionSpec(axes)
    in_specs = (jax.sharding.PartitionSpec(),) * len(replicated) + (spec,) * len(sharded)
    return jax.shard_map(per_device, mesh=mesh, in_specs=in_specs, out_specs=spec, check_vma=False)(
        *replicated, *sharded
    )


_INTERPRET: contextvars.ContextVar[bool] = contextvars.ContextVar("interpret", default=False)


def pallas_kernels() -> bool:
    """Whether the model takes its Pallas kernels (attention, the edge loss): on TPU, or
    anywhere inside `interpreted()`."""
    return target() == "tpu" or _INTERPRET.get()


def interpreting() -> bool:
    """Whether traces are inside `interpreted()` (kernels run in Pallas's interpreter)."""
    return _INTERPRET.get()


@contextlib.contextmanager
def interpreted():
    """Inside this block the model takes its Pallas kernels on any backend, run in Pallas's
    interpreter (to test them off TPU)."""
    token = _INTERPRET.set(True)
    try:
        yield
    finally:
        _INTERPRET.reset(token)


def kernel_dot(a: jax.Array, b: jax.Array, a_axis: int, b_axis: int, interpret: bool):
    """Inside a Pallas kernel: the 2D dot contracting a's `a_axis` with b's `b_axis`, fp32
    result. Interpreted (on XLA:CPU, which has no 16-bit dot with an fp32 result) the operands
    are upcast first: exact, as the products of 16-bit numbers are in fp32."""
    if interpret:
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    dims = (((a_axis,), (b_axis,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)
