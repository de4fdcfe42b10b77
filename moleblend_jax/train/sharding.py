"""Device mesh, batch sharding and global arrays from per-process data."""

import functools
from collections.abc import Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from moleblend_jax.model import platform

# dcn_data: data parallel across slices (over the data-centre network); data and fsdp: within
# a slice (over ICI). Only the gradient all-reduce crosses dcn_data, once per step.
DCN_AXIS = "dcn_data"
MESH_AXES = (DCN_AXIS, "data", "fsdp")
# The one batch layout: dimension 0 of every input is split over all devices (fsdp shards
# parameters *and* data).
BATCH_SPEC = PartitionSpec(MESH_AXES)
# Batch entries the model never reads: kept on the host (int64 ids would need x64 on device).
HOST_ONLY_KEYS = frozenset({"id", "smiles"})


def num_slices(devices: Sequence) -> int:
    """How many slices (TPU pods joined over DCN) `devices` span; 1 off TPU."""
    return len({getattr(d, "slice_index", 0) for d in devices})


def make_mesh(mesh_config: ml_collections.ConfigDict, devices: Sequence | None = None) -> Mesh:
    """A (dcn_data, data, fsdp) mesh; an axis of size -1 takes the devices the others leave.

    Within a slice the order is `jax.make_mesh`'s (topology-aware); devices spanning several
    slices go through `mesh_utils.create_hybrid_device_mesh`, with dcn_data across slices.
    `mesh.dcn_data` defaults to the number of slices. The axes are Auto: shardings come from
    `jax.jit`'s in/out shardings and the params' logical axes, not from sharding-in-types.
    """
    devices = list(jax.devices() if devices is None else devices)
    slices = num_slices(devices)
    sizes = {"dcn_data": mesh_config.get("dcn_data") or slices}
    sizes.update({axis: int(mesh_config[axis]) for axis in MESH_AXES[1:]})
    if sizes["dcn_data"] != slices:
        raise ValueError(
            f"config.mesh.dcn_data={sizes['dcn_data']} but the devices span {slices} slice(s); "
            "dcn_data must equal the number of slices."
        )
    per_slice = len(devices) // slices
    known = int(np.prod([s for a, s in sizes.items() if s != -1 and a != "dcn_data"]))
    for axis, size in sizes.items():
        if size == -1:
            sizes[axis] = per_slice // known
    shape = tuple(sizes[a] for a in MESH_AXES)
    if int(np.prod(shape)) != len(devices):
        raise ValueError(
            f"Mesh {dict(zip(MESH_AXES, shape, strict=True))} does not use all "
            f"{len(devices)} devices; "
            "set config.mesh.data / config.mesh.fsdp so their product is the devices per slice."
        )
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if slices == 1:
        return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
    grid = mesh_utils.create_hybrid_device_mesh(
        (1, *shape[1:]), (slices, 1, 1), devices=devices, allow_split_physical_axes=True
    )
    return Mesh(grid, MESH_AXES, axis_types=axis_types)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, BATCH_SPEC)


def traced_with_batch_mesh(fn: Callable, mesh: Mesh | None, name: str) -> Callable:
    """`fn`, traced with its batch split over `mesh`'s axes (`platform.batch_sharded`): the
    model's hand-written kernels then run per device. `name` names the jitted program."""

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with platform.batch_sharded(mesh, MESH_AXES):
            return fn(*args, **kwargs)

    traced.__name__ = traced.__qualname__ = name
    return traced


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Process-local numpy batch -> global jax arrays sharded along the batch dimension.

    Each process passes its own slice of the global batch (rows in process order); on a
    single process this is just a sharded device_put.
    """
    sharding = batch_sharding(mesh)
    # This is the step loop's explicit host-to-device transfer; in a multi-process run jax
    # assembles the global array through internal transfers that the guard would refuse.
    with jax.transfer_guard_host_to_device("allow"):
        return {
            key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for key, value in local_batch.items()
            if key not in HOST_ONLY_KEYS
        }


def per_device_batch(batch_size: int) -> int:
    """config.batch_size split over all devices (BATCH_SPEC splits dimension 0 over every one);
    UserError when it does not split evenly."""
    from moleblend_jax.errors import UserError

    if batch_size % jax.device_count():
        raise UserError(
            f"config.batch_size={batch_size} is not divisible by the {jax.device_count()} devices."
        )
    return batch_size // jax.device_count()
