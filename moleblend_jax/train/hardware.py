"""What an accelerator chip offers: memory, peak bf16 arithmetic and memory bandwidth.

The denominators of MFU and of the roofline bounds in train/aot.py. Each figure is the vendor's
public per-chip number (one JAX device is one chip: v4 and v5p run their two TensorCores as
one "megacore" device).
"""

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Chip:
    """One chip (one JAX device): HBM bytes, dense bf16 FLOP/s, HBM bytes/s."""

    name: str
    hbm_bytes: int
    bf16_flops: float
    hbm_bytes_per_s: float
    fp32_flops: float | None = None  # GPUs only: the non-tensor-core fp32 rate.


GIB = 2**30
GB = 10**9
CHIPS = {
    # https://cloud.google.com/tpu/docs/v4: 275 TFLOP/s bf16, 32 GiB HBM2 at 1,200 GB/s.
    "v4": Chip("v4", 32 * GIB, 275e12, 1200 * GB),
    # https://cloud.google.com/tpu/docs/v5e: 197 TFLOP/s bf16, 16 GiB HBM2 at 819 GB/s.
    "v5e": Chip("v5e", 16 * GIB, 197e12, 819 * GB),
    # https://cloud.google.com/tpu/docs/v5p: 459 TFLOP/s bf16, 95 GiB HBM2e at 2,765 GB/s.
    "v5p": Chip("v5p", 95 * GIB, 459e12, 2765 * GB),
    # https://cloud.google.com/tpu/docs/v6e: 918 TFLOP/s bf16, 32 GiB HBM at 1,640 GB/s.
    "v6e": Chip("v6e", 32 * GIB, 918e12, 1640 * GB),
    # https://www.nvidia.com/en-us/data-center/h100/ (SXM): 989 TFLOP/s dense bf16, 67 fp32,
    # 80 GB HBM3 at 3.35 TB/s.
    "H100": Chip("H100", 80 * GB, 989e12, 3350 * GB, fp32_flops=67e12),
    # https://www.nvidia.com/en-us/data-center/h200/: H100's arithmetic, 141 GB at 4.8 TB/s.
    "H200": Chip("H200", 141 * GB, 989e12, 4800 * GB, fp32_flops=67e12),
    # https://www.nvidia.com/en-us/data-center/a100/ (80 GB SXM): 312 TFLOP/s bf16, 19.5 fp32,
    # 2,039 GB/s.
    "A100": Chip("A100", 80 * GB, 312e12, 2039 * GB, fp32_flops=19.5e12),
}
# jax's device_kind -> CHIPS key (TPU kinds name the generation, GPUs the product).
_TPU_KINDS = {
    "TPU v4": "v4",
    "TPU v5 lite": "v5e",
    "TPU v5e": "v5e",
    "TPU v5": "v5p",
    "TPU v5p": "v5p",
    "TPU v6 lite": "v6e",
    "TPU v6e": "v6e",
}


def chip_of(device: jax.Device) -> Chip | None:
    """The CHIPS entry of a device, or None (CPU, an unlisted accelerator)."""
    kind = device.device_kind
    if kind in _TPU_KINDS:
        return CHIPS[_TPU_KINDS[kind]]
    return next((chip for key, chip in CHIPS.items() if key in kind), None)


def peak_flops(device: jax.Device, dtype: str) -> float | None:
    """Peak dense FLOP/s of one device for matmuls with `dtype` operands; on CPU the measured
    rate of one large matmul (what a compute-bound step could approach there); None unknown."""
    if device.platform == "cpu":
        return measured_matmul_flops(dtype)
    chip = chip_of(device)
    if chip is None:
        return None
    return chip.fp32_flops if dtype == "float32" and chip.fp32_flops else chip.bf16_flops


def peak_flops_of_devices(devices, dtype: str) -> float | None:
    """Peak FLOP/s of `devices` together: per device times their count; on CPU, where the
    devices share the host's cores, the host's measured rate once."""
    devices = list(devices)
    peak = peak_flops(devices[0], dtype)
    if peak is None or devices[0].platform == "cpu":
        return peak
    return peak * len(devices)


@functools.cache
def measured_matmul_flops(dtype: str = "float32", size: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of a [size, size] matmul (`dtype` operands, float32 result as in the model) on
    the default device, the median of `repeats`; measured once per process."""
    with jax.transfer_guard("allow"):  # Also under the entry points' "disallow".
        a = jnp.ones((size, size), dtype)
        matmul = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
        matmul(a, a).block_until_ready()
        durations = []
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a, a).block_until_ready()
            durations.append(time.perf_counter() - start)
    return 2 * size**3 / sorted(durations)[len(durations) // 2]
