"""Ahead-of-time compilation, once per input shape, with the compiled program's memory logged."""

import logging
from collections.abc import Callable, Mapping

import jax


class CompiledPerShape:
    """Calls `jitted(*args)` through one `lower(*args).compile()` per shape signature of
    `args[shape_arg]` (the batch: one program per padding bucket), logging each program's
    memory analysis when it is compiled and passing it to `check_memory(memory, shape)`, which
    may refuse to run it (train/memory.py)."""

    def __init__(
        self,
        jitted: Callable,
        name: str,
        shape_arg: int = 1,
        check_memory: Callable[[object, str], None] | None = None,
    ):
        self._jitted = jitted
        self._name = name
        self._shape_arg = shape_arg
        self._check_memory = check_memory
        self._programs: dict[tuple, jax.stages.Compiled] = {}
        self._flops: dict[tuple, float] = {}
        self.compiled_last_call = False  # Whether the last call compiled its program.

    def __call__(self, *args):
        key = _signature(args[self._shape_arg])
        program = self._programs.get(key)
        self.compiled_last_call = program is None
        if program is None:
            program = self._jitted.lower(*args).compile()
            shape, memory = _shape(args[self._shape_arg]), program.memory_analysis()
            _log_memory(self._name, shape, memory)
            if self._check_memory is not None and memory is not None:
                self._check_memory(memory, shape)
            self._programs[key] = program
            self._flops[key] = xla_cost(program)["flops"]
        return program(*args)

    def flops(self, batch: Mapping[str, jax.Array]) -> float:
        """XLA's FLOPs per device of the program compiled for `batch`'s shapes (0 if unknown)."""
        return self._flops.get(_signature(batch), 0.0)

    @property
    def num_programs(self) -> int:
        return len(self._programs)


def xla_cost(program: jax.stages.Compiled) -> dict[str, float]:
    """XLA's cost analysis of a compiled program, per device: "flops" and "bytes accessed"
    (0 where the backend reports none)."""
    cost = program.cost_analysis()
    cost = (cost[0] if isinstance(cost, list) else cost) or {}
    return {key: float(cost.get(key, 0.0)) for key in ("flops", "bytes accessed")}


def _signature(batch: Mapping[str, jax.Array]) -> tuple:
    return tuple(sorted((k, tuple(v.shape), str(v.dtype)) for k, v in batch.items()))


def _shape(batch: Mapping[str, jax.Array]) -> str:
    return "x".join(str(d) for d in batch["atom_mask"].shape)


def _log_memory(name: str, shape: str, memory) -> None:
    """Logs a compiled program's memory analysis (None: the backend reports none)."""
    if memory is None:  # Not every backend reports it.
        logging.info("Compiled %s for batch %s.", name, shape)
        return
    mib = lambda n: n / 2**20
    logging.info(
        "Compiled %s for batch %s: arguments %.1f MiB, outputs %.1f MiB, temporaries %.1f MiB, "
        "code %.1f MiB per device.",
        name,
        shape,
        mib(memory.argument_size_in_bytes),
        mib(memory.output_size_in_bytes),
        mib(memory.temp_size_in_bytes),
        mib(memory.generated_code_size_in_bytes),
    )
