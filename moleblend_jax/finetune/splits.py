"""Train/valid/test splits: deterministic Bemis-Murcko scaffold split and seeded random split.

``make_split`` and friends return ``dict(train=idx, valid=idx, test=idx)`` of int64 index arrays
into a list of molecules. Fine-tuning and the random-forest baseline split *records* and keep
the split as record ids (``split_ids``): that is what split files hold, so both train on the same
molecules by construction. Pure numpy + RDKit; no jax.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np

from moleblend_jax import atomic
from moleblend_jax.train.paths import as_path

SPLIT_NAMES = ("train", "valid", "test")
SPLIT_KINDS = ("scaffold", "random")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
# A split column without valid rows: this share of its train rows becomes valid, by scaffold.
CARVED_VALID_FRACTION = 0.1


def murcko_scaffold(smiles: str) -> str | None:
    """Bemis-Murcko scaffold SMILES without chirality; '' for acyclic, None if unparsable."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Scaffolds import MurckoScaffold

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


def scaffold_groups(smiles: Sequence[str]) -> list[list[int]]:
    """Row indices grouped by scaffold, in order of first appearance; each invalid SMILES alone."""
    groups: dict[str, list[int]] = {}
    for index, smi in enumerate(smiles):
        scaffold = murcko_scaffold(smi)
        key = f"\x00invalid:{index}" if scaffold is None else scaffold
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    return float(fractions[0]), float(fractions[1]), float(fractions[2])


def scaffold_split(
    smiles: Sequence[str], fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> dict[str, np.ndarray]:
    """Deterministic scaffold split (chemprop ``scaffold_split(balanced=False)`` convention).

    Scaffold groups are sorted by size, largest first (ties: the group seen first in the file
    first); each group goes to train if it still fits in ``fractions[0] * M``, else to valid if
    it fits in ``fractions[1] * M``, else to test. No scaffold is in two splits. Index arrays are
    sorted ascending.
    """
    frac_train, frac_valid, _ = _check_fractions(fractions)
    num = len(smiles)
    train_size, valid_size = frac_train * num, frac_valid * num
    # sorted() is stable, so equal-size groups keep their first-appearance order.
    groups = sorted(scaffold_groups(smiles), key=len, reverse=True)
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for group in groups:
        if len(train) + len(group) <= train_size:
            train += group
        elif len(valid) + len(group) <= valid_size:
            valid += group
        else:
            test += group
    index_sets = (train, valid, test)
    return {
        name: np.sort(np.asarray(idx, dtype=np.int64))
        for name, idx in zip(SPLIT_NAMES, index_sets, strict=True)
    }


def random_split(
    num: int,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    valid_size: int | None = None,
    test_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Seeded random split of ``num`` rows.

    By default valid and test get ``floor(fraction * num)`` rows and train the rest; explicit
    ``valid_size`` / ``test_size`` override that (QM9: ``datasets.QM9_SPLIT_SIZES``). Index arrays
    are sorted ascending; the same (num, seed, sizes) always gives the same split.
    """
    _, frac_valid, frac_test = _check_fractions(fractions)
    n_valid = int(np.floor(frac_valid * num)) if valid_size is None else int(valid_size)
    n_test = int(np.floor(frac_test * num)) if test_size is None else int(test_size)
    if n_valid < 0 or n_test < 0 or n_valid + n_test > num:
        raise ValueError(f"valid {n_valid} + test {n_test} rows do not fit in {num}.")
    order = np.random.default_rng(seed).permutation(num).astype(np.int64)
    test = order[:n_test]
    valid = order[n_test : n_test + n_valid]
    train = order[n_test + n_valid :]
    return {"train": np.sort(train), "valid": np.sort(valid), "test": np.sort(test)}


def make_split(
    kind: str,
    smiles: Sequence[str],
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    **sizes: int | None,
) -> dict[str, np.ndarray]:
    """'scaffold' (seed ignored: the split is deterministic) or 'random' split of ``smiles``."""
    if kind == "scaffold":
        return scaffold_split(smiles, fractions)
    if kind == "random":
        return random_split(len(smiles), seed, fractions, **sizes)
    raise ValueError(f"Unknown split kind {kind!r}; use 'scaffold' or 'random'.")


def check_split(split: dict[str, np.ndarray], num: int) -> None:
    """Raises ValueError unless the three index sets are disjoint and cover 0..num-1."""
    if set(split) != set(SPLIT_NAMES):
        raise ValueError(f"split keys must be {SPLIT_NAMES}, got {sorted(split)}.")
    joined = np.concatenate([np.asarray(split[name]) for name in SPLIT_NAMES])
    if joined.size != num or not np.array_equal(np.sort(joined), np.arange(num)):
        raise ValueError(f"split does not partition {num} rows exactly once.")


def split_ids(
    kind: str,
    ids: Sequence[int],
    smiles: Sequence[str],
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    **sizes: int | None,
) -> dict[str, list[int]]:
    """``make_split`` of records (ids [M], SMILES [M]) as lists of record ids."""
    index = make_split(kind, smiles, seed, fractions, **sizes)
    ids = np.asarray(ids, np.int64)
    return {name: ids[index[name]].tolist() for name in SPLIT_NAMES}


def column_split(
    ids: Sequence[int], row_splits: Sequence[str], smiles: Sequence[str]
) -> dict[str, list[int]]:
    """A split given per record (ids [M], row_splits [M] of "train" | "valid" | "test", SMILES [M])
    as lists of record ids, exactly as given. Without valid rows, `CARVED_VALID_FRACTION` of
    the train rows become valid by scaffold (`scaffold_split` of the train rows; logged)."""
    ids = np.asarray(ids, np.int64)
    row_splits = np.asarray(row_splits)
    split = {name: ids[row_splits == name].tolist() for name in SPLIT_NAMES}
    if not split["valid"]:
        train = np.flatnonzero(row_splits == "train")
        fractions = (1.0 - CARVED_VALID_FRACTION, CARVED_VALID_FRACTION, 0.0)
        carved = scaffold_split([smiles[i] for i in train], fractions)
        # Scaffold groups that fit neither part go to valid: train keeps its share at most.
        valid = np.sort(np.concatenate([carved["valid"], carved["test"]]))
        split["train"] = ids[train[carved["train"]]].tolist()
        split["valid"] = ids[train[valid]].tolist()
        logging.info(
            "The split column has no valid rows: %d of its %d train rows carved out as valid "
            "by scaffold.",
            len(split["valid"]),
            len(train),
        )
    return split


def id_positions(split: Mapping[str, Sequence[int]], ids: Sequence[int]) -> dict[str, np.ndarray]:
    """A split of record ids -> int64 positions in ``ids``.

    Raises ValueError unless the split partitions ``ids`` exactly (a split made for other data).
    """
    position = {int(i): p for p, i in enumerate(ids)}
    unknown = [i for name in SPLIT_NAMES for i in split[name] if int(i) not in position]
    if unknown:
        raise ValueError(
            f"split ids do not match the data: {len(unknown)} ids (e.g. {unknown[:3]}) are not "
            f"among its {len(position)} records."
        )
    positions = {
        name: np.asarray([position[int(i)] for i in split[name]], np.int64) for name in SPLIT_NAMES
    }
    try:
        check_split(positions, len(position))
    except ValueError:
        raise ValueError(
            f"split ids do not match the data: they do not cover its {len(position)} records "
            "exactly once."
        ) from None
    return positions


def save_split(path: str | os.PathLike, split: Mapping[str, Sequence[int]]) -> None:
    """Writes ``{"train": [...], "valid": [...], "test": [...]}`` JSON (local or gs://)."""
    payload = {name: [int(i) for i in np.asarray(split[name]).tolist()] for name in SPLIT_NAMES}
    atomic.write_json(path, payload, indent=None)


def load_split(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a ``save_split`` JSON back into int64 arrays."""
    payload = json.loads(as_path(path).read_text())
    return {name: np.asarray(payload[name], dtype=np.int64) for name in SPLIT_NAMES}
