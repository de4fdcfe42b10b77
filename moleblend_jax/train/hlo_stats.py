"""What an optimized HLO module's text says about a compiled program: its collectives (with
the transfers between TPU slices) and its largest buffers. Parsed from `Compiled.as_text()`."""

import re
from collections.abc import Sequence

import numpy as np

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

# An instruction line: its name, result type, opcode and (up to the first ")") its operands.
INSTRUCTION = re.compile(
    r"^\s*(?:ROOT )?%?(?P<name>[\w.\-]+) = (?P<type>.+?) (?P<op>[\w\-]+)\((?P<operands>[^)]*)"
)
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16|c64|c128)\[([\d,]*)\]")
_ELEMENT_BITS = {"pred": 8, "bf16": 16}
OP_NAME = re.compile(r'op_name="([^"]*)"')


def element_bits(dtype: str) -> int:
    """Bits of one element of an HLO element type ('f32' -> 32, 'pred' -> 8, 'c64' -> 64)."""
    return _ELEMENT_BITS.get(dtype) or int(dtype[1:])


def op_names(hlo: str) -> dict[str, str]:
    """Instruction name -> the JAX operation that made it (its op_name metadata)."""
    names = {}
    for line in hlo.splitlines():
        match, op_name = INSTRUCTION.match(line), OP_NAME.search(line)
        if match and op_name:
            names[match.group("name")] = op_name.group(1)
    return names


def type_bytes(hlo_type: str) -> int:
    """Bytes of an HLO result type (an array or a tuple of arrays)."""
    total = 0
    for dtype, dims in _ARRAY.findall(hlo_type):
        total += element_bits(dtype) * int(np.prod([int(d) for d in dims.split(",") if d])) // 8
    return total


def collectives(hlo: str, slices: Sequence[int]) -> dict[str, dict[str, int]]:
    """Collective kind -> {count, bytes (of results)} in an optimized HLO module's text.

    Async pairs count once (their -start). Transfers between slices (over DCN) are not HLO
    collectives on TPU but host transfers to the multi-slice runtime: they are listed as
    "dcn-<kind>" (e.g. dcn-all-reduce), one per rendezvous, with the bytes each device sends.
    """
    found, dcn_seen = {}, set()
    for line in hlo.splitlines():
        match = INSTRUCTION.match(line)
        if not match:
            continue
        op = match.group("op")
        dcn = _DCN_TRANSFER.search(line)
        if op == "send" and dcn:
            if dcn.group("rendezvous") in dcn_seen:
                continue
            dcn_seen.add(dcn.group("rendezvous"))
            kind = "dcn-" + dcn.group("kind").lower().replace("_", "-")
            payload = _ARRAY.search(match.group("type"))
            size = type_bytes(payload.group(0)) if payload else 0
        elif op.removesuffix("-start") in COLLECTIVES and not op.endswith("-done"):
            kind, size = op.removesuffix("-start"), type_bytes(match.group("type"))
            if len(set(slices)) > 1 and _crosses_slices(line, slices):
                kind = "dcn-" + kind
        else:
            continue
        entry = found.setdefault(kind, {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += size
    return dict(sorted(found.items()))


_DCN_TRANSFER = re.compile(
    r'_xla_host_transfer_rendezvous="(?P<rendezvous>[^"]+)".*?'
    r'_xla_megascale_transfer_type="(?P<kind>[A-Z_]+)"'
)


def _crosses_slices(line: str, slices: Sequence[int]) -> bool:
    """Whether any replica group of a collective holds devices of two slices."""
    return any(len({slices[i] for i in group}) > 1 for group in replica_groups(line, len(slices)))


def replica_groups(line: str, num_devices: int) -> list[list[int]]:
    """The replica groups of a collective's HLO line, in either printed form:
    {{0,1},{2,3}} or the iota form [G,S]<=[d0,d1,...]T(perm)."""
    explicit = re.search(r"replica_groups=\{((?:\{[\d,]*\},?)*)\}", line)
    if explicit:
        return [[int(i) for i in g.split(",") if i] for g in re.findall(r"\{([\d,]*)\}", line)]
    iota = re.search(r"replica_groups=\[(\d+),(\d+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", line)
    if iota:
        groups, size = int(iota.group(1)), int(iota.group(2))
        dims = [int(d) for d in iota.group(3).split(",")]
        ids = np.arange(int(np.prod(dims))).reshape(dims)
        if iota.group(4):
            ids = ids.transpose([int(p) for p in iota.group(4).split(",")])
        return ids.reshape(groups, size).tolist()
    if "replica_groups={}" in line:
        return [list(range(num_devices))]
    return []


def largest_buffers(hlo: str, count: int = 5) -> list[dict]:
    """The `count` largest array results of an optimized HLO module's instructions (a proxy
    for its largest temporaries): bytes, shape and the JAX operation that made it."""
    found = []
    for line in hlo.splitlines():
        match = INSTRUCTION.match(line)
        skipped = ("parameter", "get-tuple-element", "bitcast", "tuple", "copy-start")
        if not match or match.group("op") in skipped or match.group("type").startswith("("):
            continue
        op_name = OP_NAME.search(line)
        found.append(
            {
                "bytes": type_bytes(match.group("type")),
                "shape": re.sub(r"\{[^}]*\}", "", match.group("type")),
                "op": short_op_name(op_name.group(1)) if op_name else match.group("op"),
            }
        )
    found.sort(key=lambda b: -b["bytes"])
    return found[:count]


def short_op_name(op_name: str, parts: int = 4) -> str:
    """'jit(train_step)/transpose(jvp(MoleBlend))/edge_head/dot_general' -> its last `parts`
    path components (of the first op of a multi-op fusion), enough to find it in the model."""
    first = op_name.split(":")[0]
    return "/".join(first.split("/")[-parts:])
