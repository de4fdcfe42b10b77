"""Where a compiled program's memory traffic goes: the bytes each top-level instruction of an
optimized HLO module reads and writes, grouped by the JAX operation that made it.

XLA's cost analysis gives one total ("bytes accessed"); this splits it. Each instruction of the
entry computation (a fusion, a copy, a collective, ...) is charged its operands and its result,
at the size their layouts occupy in memory: TPU layouts tile the two most minor dimensions
(e.g. `T(8,128)`), so a [.., 65, 24] array occupies [.., 72, 128] elements. Buffers the compiler
placed in on-chip memory (a layout's `S(n)` memory space) count too, as they do in XLA's
figure; their HBM share is kept apart. The sum is an estimate
of XLA's figure, not the figure itself (XLA charges some ops less than their whole operands,
e.g. a dynamic slice); `benchmarks/tpu_bytes.py` prints both.
"""

import collections
import dataclasses
import re

import numpy as np

from moleblend_jax.train.hlo_stats import INSTRUCTION, OP_NAME, element_bits

_SHAPE = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\](?:\{([^}]*)\})?")
_PARAMETER = re.compile(r"(?P<name>[\w.\-]+): (?P<type>(?:\([^)]*\))|(?:[\w\[\],]+(?:\{[^}]*\})?))")
# Instructions that move no data of their own: views, tuples, and the second half of async pairs.
_FREE = {
    "parameter",
    "constant",
    "get-tuple-element",
    "tuple",
    "bitcast",
    "after-all",
    "partition-id",
}
_FREE_SUFFIX = "-done"


@dataclasses.dataclass(frozen=True)
class Access:
    """One top-level instruction's traffic (bytes, in the memory its layouts occupy)."""

    name: str
    op: str
    bytes: int  # Operands read and result written, in any memory.
    hbm_bytes: int  # The part held in HBM (the rest the compiler placed in on-chip memory).
    op_name: str  # The JAX operation, e.g. "jit(train_step)/jvp(MoleBlend)/encoder/layer_0/...".


def array_bytes(dtype: str, dims: str, layout: str | None) -> tuple[int, bool]:
    """(bytes an array occupies, whether it lives in HBM) from its HLO type and layout, with
    the two most minor dimensions rounded up to the layout's first tile."""
    shape = [int(d) for d in dims.split(",") if d]
    bits = element_bits(dtype)
    in_hbm = True
    if layout:
        minor_to_major, _, tiling = layout.partition(":")
        order = [int(d) for d in minor_to_major.split(",") if d]
        in_hbm = not re.search(r"S\([1-9]\d*\)", tiling)
        tile = re.match(r"T\(([\d,]+)\)", tiling)
        if tile and order:
            sizes = [int(t) for t in tile.group(1).split(",")]
            for dim, size in zip(order, reversed(sizes), strict=False):
                shape[dim] = -(-shape[dim] // size) * size
    return int(np.prod(shape, dtype=np.int64)) * bits // 8, in_hbm


def _type_bytes(hlo_type: str) -> tuple[int, int]:
    """(all bytes, HBM bytes) of an HLO type: an array or a tuple of arrays."""
    total = hbm = 0
    for dtype, dims, layout in _SHAPE.findall(hlo_type):
        size, in_hbm = array_bytes(dtype, dims, layout or None)
        total, hbm = total + size, hbm + size * in_hbm
    return total, hbm


_COMPUTATION = re.compile(r"^(?:ENTRY )?%(?P<name>[\w.\-]+) \((?P<params>.*)\) -> .* \{$")
_CALLED = re.compile(
    r"(?:branch_computations=\{(?P<branches>[^}]*)\}|to_apply=%(?P<call>[\w.\-]+))"
)
# Ops whose called computations run as part of them, not as fused kernels.
_CONTROL = {"conditional", "call", "while"}


def _computations(hlo: str) -> tuple[str, dict[str, tuple[str, list[str]]]]:
    """(entry's name, computation name -> (parameter list, instruction lines))."""
    entry, computations, current = "", {}, None
    for line in hlo.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = header.group("name")
            computations[current] = (header.group("params"), [])
            entry = current if line.startswith("ENTRY ") else entry
        elif line == "}":
            current = None
        elif current is not None:
            computations[current][1].append(line)
    return entry, computations


def accesses(hlo: str) -> list[Access]:
    """The traffic of each instruction the module's entry computation runs.

    An async copy or slice (`copy-start`, `slice-start`: the compiler staging a buffer
    between HBM and on-chip memory) is charged its destination twice (read and write); an
    instruction without an op name (such a copy) takes its first operand's, and an entry
    parameter's is "(parameter)". A conditional is charged its costlier branch's instructions
    (so a skipped update costs nothing more than the update), a call or loop body its own.
    """
    entry, computations = _computations(hlo)
    types = {m.group("name"): m.group("type") for m in _PARAMETER.finditer(computations[entry][0])}
    op_names = dict.fromkeys(types, "(parameter)")

    def run(name: str) -> list[Access]:
        result = []
        for line in computations[name][1]:
            match = INSTRUCTION.match(line)
            if not match:
                continue
            name_, op, hlo_type = match.group("name"), match.group("op"), match.group("type")
            operands = re.findall(r"%([\w.\-]+)", match.group("operands"))
            types[name_] = hlo_type
            op_name = OP_NAME.search(line)
            if op == "parameter" and name == entry:
                op_names[name_] = "(parameter)"
            elif op_name:
                op_names[name_] = op_name.group(1)
            else:
                op_names[name_] = next((op_names[o] for o in operands if o in op_names), "")
            if op in _CONTROL:
                called = _CALLED.search(line)
                branches = (
                    (called.group("branches") or called.group("call") or "") if called else ""
                )
                runs = [run(b.strip().lstrip("%")) for b in branches.split(",") if b.strip()]
                result.extend(max(runs, key=lambda r: sum(a.bytes for a in r), default=[]))
                continue
            if op in _FREE or op.endswith(_FREE_SUFFIX):
                continue
            if op.endswith("-start") and op.removesuffix("-start") in ("copy", "slice"):
                # Result: ((operands), destination, context).
                destination = _SHAPE.findall(hlo_type)[-2]
                size, in_hbm = array_bytes(*destination[:2], destination[2] or None)
                total, hbm = 2 * size, size * (1 + in_hbm)
            else:
                total, hbm = _type_bytes(hlo_type)
                for operand in operands:
                    operand_total, operand_hbm = _type_bytes(types.get(operand, ""))
                    total, hbm = total + operand_total, hbm + operand_hbm
            result.append(Access(name_, op, total, hbm, op_names[name_]))
        return result

    return run(entry)


def phase(op_name: str) -> str:
    """forward, backward, update (the optimizer and the rest outside the model's gradient) or
    staging (moving the step's arguments between HBM and on-chip memory)."""
    if op_name == "(parameter)":
        return "staging"
    if "transpose(jvp(" in op_name:
        return "backward"
    if "jvp(" in op_name:
        return "forward"
    return "update"


def source(op_name: str, depth: int = 3) -> str:
    """The model path of an operation, `depth` scopes deep, with layer numbers folded:
    ".../encoder/layer_7/attention/dot_general" -> "encoder/layer_*/attention"."""
    scopes = [
        re.sub(r"^layer_\d+$", "layer_*", part)
        for part in op_name.split("/")
        if part and not part.startswith(("jit(", "jvp(", "transpose(", "checkpoint", "remat"))
    ]
    return "/".join(scopes[:depth]) or "(no op name)"


def by_source(items: list[Access], depth: int = 3) -> list[dict]:
    """Traffic per (phase, source), largest first: [{phase, source, bytes, count}]."""
    totals = collections.Counter()
    counts = collections.Counter()
    for item in items:
        key = (phase(item.op_name), source(item.op_name, depth))
        totals[key] += item.bytes
        counts[key] += 1
    return [
        {"phase": key[0], "source": key[1], "bytes": size, "count": counts[key]}
        for key, size in totals.most_common()
    ]
