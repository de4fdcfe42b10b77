"""Throughput of a training loop between two log lines: step time, molecules/s, the share of
time spent waiting for input, and model / hardware FLOPs utilisation.

The loops keep one step in flight: after dispatching step k they wait for step k - 1, so the
time between two completions is the step's real time (the device's, or the input's when the
device starves), while the host prepares the next batch during the device's step.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager

import jax
import numpy as np

# The fields `StepClock.interval` adds to a log line: measurements, different in every run.
TIMING_KEYS = ("step_seconds", "molecules_per_second", "input_wait_fraction", "mfu", "hfu")


def without_timing(row: dict) -> dict:
    """A log line less its TIMING_KEYS: what two runs of the same config must agree on."""
    return {k: v for k, v in row.items() if k not in TIMING_KEYS}


def step_cost(program, batch, *, molecules: int, model_flops: float) -> dict:
    """`StepClock.step_done`'s arguments for a step `program` (a CompiledPerShape) just ran on
    `batch` (global arrays): its XLA FLOPs over all devices and whether that call compiled."""
    return {
        "molecules": molecules,
        "model_flops": model_flops,
        "hardware_flops": program.flops(batch) * jax.device_count(),
        "compiled": program.compiled_last_call,
    }


class StepClock:
    """Per-step wall time and input wait, summarised once per log interval.

    A loop calls `waiting_for_input()` around fetching a batch and `dispatched(outputs,
    **cost)` after dispatching a step: that waits for the step before it and closes it. After
    syncing (fetching metrics) it calls `finish()`, and `restart()` after work that is not a
    step (evaluation, checkpoints), so that time is counted in no step.
    """

    def __init__(self):
        self.restart()
        self._steps: list[tuple[float, float, float, float, float]] = []
        self._in_flight = None

    def dispatched(self, outputs, **cost) -> None:
        """A step was dispatched: wait for the previous one, close it, keep this one in flight.
        `cost`: `step_done`'s keyword arguments for this step."""
        self.finish()
        self._in_flight = (outputs, cost)

    def finish(self) -> None:
        """Waits for the step in flight, if any, and closes it."""
        if self._in_flight is not None:
            outputs, cost = self._in_flight
            self._in_flight = None
            jax.block_until_ready(outputs)
            self.step_done(**cost)

    @property
    def idle(self) -> bool:
        """No step in flight."""
        return self._in_flight is None

    def restart(self) -> None:
        self._last = time.perf_counter()
        self._wait = 0.0

    @contextmanager
    def waiting_for_input(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._wait += time.perf_counter() - start

    def step_done(
        self, *, molecules: int, model_flops: float, hardware_flops: float, compiled: bool = False
    ) -> None:
        """Closes one step of `molecules`, whose model and XLA FLOPs (over all devices) are
        given. A step that included compiling its program is left out of the statistics."""
        now = time.perf_counter()
        if not compiled:
            self._steps.append(
                (now - self._last, self._wait, molecules, model_flops, hardware_flops)
            )
        self._last, self._wait = now, 0.0

    def interval(self, peak_flops: float | None) -> dict[str, float]:
        """The steps since the last call: step_seconds (median), molecules_per_second,
        input_wait_fraction, and with `peak_flops` (all devices, FLOP/s) mfu and hfu. Empty
        when no step was timed."""
        if not self._steps:
            return {}
        seconds, waits, molecules, model_flops, hardware_flops = np.array(self._steps).T
        self._steps = []
        total = float(seconds.sum())
        stats = {
            "step_seconds": float(np.median(seconds)),
            "molecules_per_second": float(molecules.sum() / total),
            "input_wait_fraction": float(min(waits.sum() / total, 1.0)),
        }
        if peak_flops:
            stats["mfu"] = float(model_flops.sum() / total / peak_flops)
            stats["hfu"] = float(hardware_flops.sum() / total / peak_flops)
        return stats
