"""Param trees written by earlier versions of this repository, read in today's layout.

Every reader of our checkpoints goes through `train.checkpoint` (`Checkpointer.restore` to resume
pretraining, `restore_params` for fine-tuning, prediction and embeddings), which calls these.

One layout change so far: the degree embedding was one table, `degree_embed/embed/embedding`,
the sum of the original's two; it is now the original's pair `degree_embed/in` and
`degree_embed/out` (`model.embeddings.DegreeEmbedding`). An old table becomes "in" and "out"
starts at zero, which keeps the function; in a train state the Adam moments are split the same
way (a fresh "out" table has zero moments).
"""

import logging
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

DEGREE = "degree_embed"
ONE_DEGREE_TABLE = f"{DEGREE}/embed/embedding"


def _key_name(key: Any) -> str:
    """A path entry's name: a dict key, an attribute or a sequence index."""
    return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))


def _names(tree: Any) -> list[str]:
    """'/'-joined paths of the leaves (arrays, ShapeDtypeStructs, orbax metadata)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
    return ["/".join(_key_name(k) for k in path) for path, _ in leaves]


def has_one_degree_table(tree: Any) -> bool:
    """Whether a param tree, or a state holding one, has the old single degree table."""
    return any(name.endswith(ONE_DEGREE_TABLE) for name in _names(tree))


def _holds_degree_tables(node: Any) -> bool:
    """An encoder's dict: params, or an optimizer's moments of them, at any depth of a state."""
    return isinstance(node, Mapping) and isinstance(node.get(DEGREE), Mapping)


def _zeros_like(x):
    return np.zeros_like(x) if isinstance(x, np.ndarray) else jnp.zeros_like(x)


def split_degree_table(tree: Any) -> Any:
    """Every encoder dict in `tree` with the old table -> "in" = that table, "out" = zeros;
    anything else unchanged (so a tree in today's layout comes back as is)."""

    def split(node):
        if not _holds_degree_tables(node) or set(node[DEGREE]) != {"embed"}:
            return node
        table = node[DEGREE]["embed"]["embedding"]
        tables = {"in": {"embedding": table}, "out": {"embedding": _zeros_like(table)}}
        return {**node, DEGREE: tables}

    return jax.tree.map(split, tree, is_leaf=_holds_degree_tables)


def merge_degree_tables(tree: Any) -> Any:
    """The inverse layout with "in"'s leaf as the one table: e.g. today's abstract train state
    -> the target that an old checkpoint restores into."""

    def merge(node):
        if not _holds_degree_tables(node) or set(node[DEGREE]) != {"in", "out"}:
            return node
        return {**node, DEGREE: {"embed": node[DEGREE]["in"]}}

    return jax.tree.map(merge, tree, is_leaf=_holds_degree_tables)


def upgrade(tree: Any, where: str) -> Any:
    """A loaded param tree or train state in today's layout; logs what it changed, naming
    `where` the tree came from."""
    if not has_one_degree_table(tree):
        return tree
    logging.warning(
        "%s was written with one degree table (before the original's in/out pair): loaded as "
        "degree_embed/in, with degree_embed/out zeros (the same function).",
        where,
    )
    return split_degree_table(tree)
