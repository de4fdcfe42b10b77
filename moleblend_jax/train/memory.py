"""Pre-flight memory check: does a compiled step fit the device, and which settings would?"""

import os

import jax

from moleblend_jax.errors import UserError

GIB = 2**30


def step_bytes(memory) -> int:
    """Bytes a compiled program holds at once per device: arguments + outputs + temporaries,
    less the outputs that reuse donated argument buffers."""
    return (
        memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        + memory.temp_size_in_bytes
        - memory.alias_size_in_bytes
    )


def device_memory_bytes(device: jax.Device) -> int | None:
    """The memory one device may use: the allocator's limit on GPU/TPU; on CPU the host's
    available memory shared by its local devices; None when unknown."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    if device.platform != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        available = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return available // jax.local_device_count()


def check_fits(memory, *, what: str, batch_size: int, grad_accum_steps: int, remat: bool) -> None:
    """Raises a one-line UserError when `memory` (a compiled program's memory_analysis) needs
    more than the device has, naming settings that fit (`settings_that_fit`)."""
    limit = device_memory_bytes(jax.local_devices()[0])
    needed = step_bytes(memory)
    if limit is None or needed <= limit:
        return
    suggestions = settings_that_fit(
        memory,
        limit,
        batch_size=batch_size,
        num_devices=jax.device_count(),
        grad_accum_steps=grad_accum_steps,
        remat=remat,
    )
    raise UserError(
        f"The {what} needs {describe(memory)}, more than the {limit / GIB:.1f} GiB this device "
        f"has; settings that fit: " + ("; ".join(suggestions) or "a smaller model") + "."
    )


def describe(memory) -> str:
    """'X GiB per device (arguments A, temporaries T, outputs O)'."""
    return (
        f"{step_bytes(memory) / GIB:.1f} GiB per device (arguments "
        f"{memory.argument_size_in_bytes / GIB:.1f}, temporaries "
        f"{memory.temp_size_in_bytes / GIB:.1f}, outputs {memory.output_size_in_bytes / GIB:.1f})"
    )


def settings_that_fit(
    memory, limit: int, *, batch_size: int, num_devices: int, grad_accum_steps: int, remat: bool
) -> list[str]:
    """Command-line settings under which a program that needs more than `limit` bytes per
    device would fit, estimated from its memory analysis.

    Temporaries (activations) scale with the molecules per microbatch, the rest does not; the
    suggestions follow that model from the measured program. Arguments (parameters and
    optimizer state) shrink only by sharding them: mesh.fsdp when they are a large share.
    """
    fixed = step_bytes(memory) - memory.temp_size_in_bytes
    per_device = batch_size // num_devices
    suggestions = []
    for factor in (2, 4, 8, 16, 32, 64):
        if per_device % (grad_accum_steps * factor):
            break
        estimate = fixed + memory.temp_size_in_bytes / factor
        if estimate <= 0.9 * limit:
            suggestions = [
                f"--config.grad_accum_steps={grad_accum_steps * factor} (about "
                f"{estimate / GIB:.1f} GiB, same batch)",
                f"--config.batch_size={batch_size // factor} (about {estimate / GIB:.1f} GiB)",
            ]
            break
    if not remat:
        suggestions.append("--config.model.remat=true (recomputes the layers in the backward)")
    if memory.argument_size_in_bytes > 0.25 * limit:
        suggestions.append(
            "--config.mesh.fsdp=4 (shards parameters and optimizer state over 4 devices)"
        )
    return suggestions
