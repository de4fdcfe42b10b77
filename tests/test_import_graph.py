"""Data flows one way between the packages: chem -> data -> model -> train -> finetune -> cli."""

import ast
import collections
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "moleblend_jax"
# What each part may import (function-level imports included). The leaves import nothing.
ALLOWED = {
    "schema": set(),
    "host_allocator": set(),
    "configs": set(),
    "chem": {"schema"},
    "data": {"schema", "chem", "errors", "atomic"},
    "model": {"schema"},
    "train": {"schema", "chem", "data", "model", "host_allocator", "errors", "atomic"},
    "finetune": {"schema", "chem", "data", "model", "train", "configs", "errors", "atomic"},
    "interop": {"model", "configs"},
    "errors": set(),
    "atomic": {"errors"},
    "inference": {"schema", "data", "errors", "finetune", "model", "train", "atomic"},
    "api": {"configs", "data", "errors", "finetune", "inference", "train"},
    # The commands, at the top: nothing in the package imports them.
    "cli": {
        "api", "atomic", "chem", "configs", "data", "errors", "finetune", "host_allocator",
        "inference", "interop", "model", "schema", "train",
    },
}  # fmt: skip


def package_imports() -> dict[str, set[str]]:
    """Part of moleblend_jax (subpackage or top-level module) -> the other parts it imports."""
    edges = collections.defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).with_suffix("").parts
        if relative == ("__init__",):
            continue
        source = relative[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("moleblend_jax"):
                parts = node.module.split(".")
                targets = [parts[1]] if len(parts) > 1 else [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [
                    a.name.split(".")[1] for a in node.names if a.name.startswith("moleblend_jax.")
                ]
            else:
                continue
            edges[source].update(t for t in targets if t != source)
    return edges


def test_every_part_imports_only_what_it_may():
    edges = package_imports()
    assert set(edges) | set(ALLOWED) == set(ALLOWED), f"unlisted parts: {set(edges) - set(ALLOWED)}"
    for source, targets in edges.items():
        assert targets <= ALLOWED[source], f"{source} imports {sorted(targets - ALLOWED[source])}"


def test_the_allowed_graph_has_no_cycle():
    def reaches(start, goal, seen=frozenset()):
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
            for nxt in ALLOWED[start]
        )

    assert not [part for part in ALLOWED if reaches(part, part)]
