"""The cells and columns of your CSV tables: label cells parsed as numbers (blank and nan / na /
none are missing labels, anything else not a number is named), duplicate column names and the
SMILES column. Shared by the shard writer's CSV reader (`sources.csv_source`) and fine-tuning's
own-file reader (`finetune.user_data`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from moleblend_jax.data.source_base import open_text
from moleblend_jax.errors import UserError

# CSV columns never taken as labels when label columns are auto-detected.
ID_COLUMNS = {"id", "idx", "index", "num", "mol_id", "molecule_id", "name", "unnamed: 0"}

_MISSING_MARKERS = ("nan", "na", "none")  # Cells that mean "no label", as a blank does.


def parse_numbers(cells: Sequence[str]) -> tuple[np.ndarray, list[int]]:
    """Text cells [M] -> (float64 values [M], NaN for blanks and nan / na / none; the positions
    of the cells that are not numbers)."""
    import pandas as pd

    text = pd.Series(cells, dtype=object).fillna("").astype(str).str.strip()
    values = pd.to_numeric(text.where(text != "", None), errors="coerce").to_numpy(np.float64)
    unparsed = np.isnan(values) & (text != "").to_numpy()
    bad = np.flatnonzero(unparsed & ~text.str.lower().isin(_MISSING_MARKERS).to_numpy())
    return values, bad.tolist()


def bad_cells(cells: Sequence[str], bad: list[int]) -> str:
    """'3 non-numeric cells (row 4: 'abc', ...)': the first bad data rows, 1-based."""
    shown = ", ".join(f"row {r + 1}: {cells[r]!r}" for r in bad[:3])
    return f"{len(bad)} non-numeric cells ({shown})"


def require_unique_columns(path: str) -> None:
    """UserError when a CSV header names a column twice (pandas would silently read the second
    as 'name.1')."""
    import csv

    with open_text(path) as handle:
        header = next(csv.reader(handle), [])
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise UserError(f"{path}: columns named more than once: {twice}; rename them")


def find_smiles_column(header: Sequence[str], smiles_column: str | None, path: str) -> str:
    """`smiles_column` checked against the file's `header`, or (None / "") the column named
    `smiles` in any case; ValueError naming the file's columns otherwise."""
    if not smiles_column:
        matches = [c for c in header if c.strip().lower() == "smiles"]
        if not matches:
            raise ValueError(
                f"{path}: no 'smiles' column among the file's columns {list(header)}; "
                "name the SMILES column"
            )
        return matches[0]
    if smiles_column not in header:
        raise ValueError(
            f"{path}: SMILES column {smiles_column!r} not among the file's columns {list(header)}"
        )
    return smiles_column
