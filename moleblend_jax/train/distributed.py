"""Multi-process start-up (TPU pods, multi-node GPU, or several CPU processes)."""

import os

import jax


def maybe_initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Calls `jax.distributed.initialize` when this is one of several processes.

    Explicit arguments win; otherwise JAX's own cluster detection runs on a multi-host TPU
    slice (several TPU_WORKER_HOSTNAMES) or when MOLEBLEND_DISTRIBUTED=1 (SLURM, Open MPI).
    A single plain process does nothing.
    """
    if coordinator_address is not None:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
    elif (
        "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
        or os.environ.get("MOLEBLEND_DISTRIBUTED") == "1"
    ):
        jax.distributed.initialize()
