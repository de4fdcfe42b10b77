"""Where a compiled step's time goes: kernel time per model module from a jax.profiler trace."""

import collections
import glob
import gzip
import json
import os
import re
from collections.abc import Callable

import jax

from moleblend_jax.train import hlo_stats


def ms_per_module(
    compiled: jax.stages.Compiled,
    run_step: Callable[[], object],
    trace_dir: str,
    num_steps: int = 3,
) -> dict[str, float]:
    """ms per step spent in each top-level model module, forward and backward, from a
    jax.profiler trace of `num_steps` calls of `run_step`.

    Kernels are mapped to modules through the op_name metadata of the compiled HLO; the sum
    can exceed the step time where the runtime runs independent kernels concurrently.
    """
    op_names = hlo_stats.op_names(compiled.as_text())
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(num_steps):
            run_step()
    trace_file = max(
        glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True), key=os.path.getmtime
    )
    with gzip.open(trace_file) as f:
        events = json.load(f)["traceEvents"]
    totals = collections.Counter()
    for event in events:
        op_name = op_names.get(event.get("name")) if event.get("ph") == "X" else None
        if op_name is None:
            continue
        op_name = op_name.split("/", 1)[-1]  # Drop "jit(train_step)".
        direction = "backward" if op_name.startswith("transpose(") else "forward"
        parts = [p for p in re.split(r"[/()]", op_name) if p]
        parts = [p for p in parts if p not in ("transpose", "jvp", "MoleBlend", "encoder")]
        module = re.sub(r"^layer_\d+$", "transformer_layers", parts[0]) if parts else "other"
        if not module.endswith(("_head", "_bias", "_basis", "_embed", "layers", "centrality")):
            module = "losses_optimizer_other"
        totals[f"{module} ({direction})"] += event["dur"] / 1000 / num_steps
    return {k: round(v, 1) for k, v in totals.most_common()}


class ProfileWindow:
    """A jax.profiler trace of steps [start, start + count) of a training loop, written to
    `trace_dir` (open it with TensorBoard's profile plugin or ui.perfetto.dev).

    The loop calls `annotate(step)` around each step's dispatch and `after(step, outputs)`
    after it; (0, 0) or None traces nothing.
    """

    def __init__(self, steps: tuple[int, int] | None, trace_dir: str):
        start, count = steps or (0, 0)
        self.start, self.stop, self.trace_dir = int(start), int(start) + int(count), trace_dir
        self.active = False

    def annotate(self, step: int):
        """A StepTraceAnnotation for step `step` (1-based, the step about to run)."""
        if self.start < self.stop and step == self.start and not self.active:
            jax.profiler.start_trace(self.trace_dir)
            self.active = True
        return jax.profiler.StepTraceAnnotation("train", step_num=step)

    def after(self, step: int, outputs) -> None:
        """Ends the trace once step `stop - 1` has finished on the device."""
        if self.active and step >= self.stop - 1:
            jax.block_until_ready(outputs)
            jax.profiler.stop_trace()
            self.active = False

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
