"""Device mesh, batch sharding and global arrays from per-process data."""

from collections.abc import Mapping, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp")
# The one batch layout: dimension 0 of every input is split over all devices (fsdp shards
# parameters *and* data).
BATCH_SPEC = PartitionSpec(MESH_AXES)
# Batch entries the model never reads: kept on the host (int64 ids would need x64 on device).
HOST_ONLY_KEYS = frozenset({"id", "smiles"})


def make_mesh(mesh_config: ml_collections.ConfigDict, devices: Sequence | None = None) -> Mesh:
    """A (data, fsdp) mesh from `jax.make_mesh` (topology-aware device order); an axis of size
    -1 takes the devices the other leaves.

    The axes are Auto: shardings come from `jax.jit`'s in/out shardings and the params'
    logical axes, not from sharding-in-types.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = {axis: int(mesh_config[axis]) for axis in MESH_AXES}
    known = int(np.prod([s for s in sizes.values() if s != -1]))
    for axis, size in sizes.items():
        if size == -1:
            sizes[axis] = len(devices) // known
    shape = tuple(sizes[a] for a in MESH_AXES)
    if int(np.prod(shape)) != len(devices):
        raise ValueError(
            f"Mesh {dict(zip(MESH_AXES, shape, strict=True))} does not use all "
            f"{len(devices)} devices; "
            "set config.mesh.data / config.mesh.fsdp so their product is the device count."
        )
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, BATCH_SPEC)


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
