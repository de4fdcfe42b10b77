"""Device mesh, batch sharding and global arrays from per-process data."""

from collections.abc import Mapping

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp")
# The batch dimension is split over every device: fsdp shards parameters *and* data.
BATCH_SPEC = PartitionSpec(MESH_AXES)
# Batch entries the model never reads: kept on the host (int64 ids would need x64 on device).
HOST_ONLY_KEYS = frozenset({"id", "smiles"})


def make_mesh(mesh_config: ml_collections.ConfigDict, devices=None) -> Mesh:
    """A (data, fsdp) mesh; an axis of size -1 takes the remaining devices."""
    devices = np.asarray(devices if devices is not None else jax.devices())
    sizes = {axis: int(mesh_config[axis]) for axis in MESH_AXES}
    known = int(np.prod([s for s in sizes.values() if s != -1]))
    for axis, size in sizes.items():
        if size == -1:
            sizes[axis] = devices.size // known
    shape = tuple(sizes[a] for a in MESH_AXES)
    if int(np.prod(shape)) != devices.size:
        raise ValueError(
            f"Mesh {dict(zip(MESH_AXES, shape, strict=True))} does not use all "
            f"{devices.size} devices; "
            "set config.mesh.data / config.mesh.fsdp so their product is the device count."
        )
    return Mesh(devices.reshape(shape), MESH_AXES)


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
    return {
        key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for key, value in local_batch.items()
        if key not in HOST_ONLY_KEYS
    }
