"""Input readers of your own files: .smi, .csv, .sdf(.gz), and in-memory tables (fine-tuning
data sets); `open_source` picks the reader for a path or a public data set's name
(`public_sets`: PCQM4Mv2, the bundled QM9 and MOSES subset).

A reader yields one `SourceItem` per source molecule, keyed by the molecule's index in the
source (SPEC 9: never by position after filtering, so a parse failure cannot shift labels).
Workers turn items into records (`moleblend_jax.data.featurize.item_to_record`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Sequence

import numpy as np

from moleblend_jax.data.public_sets import (
    BUNDLED_SOURCES,
    PCQM_SDF_NAME,
    pcqm4mv2_source,
)
from moleblend_jax.data.source_base import (
    Source,
    SourceItem,
    check_file,
    iter_sdf_blocks,
    open_text,
    sdf_title,
)
from moleblend_jax.errors import MissingFileError, UserError

# CSV columns never taken as labels when label columns are auto-detected.
_ID_COLUMNS = {"id", "idx", "index", "num", "mol_id", "molecule_id", "name", "unnamed: 0"}


# ---------------------------------------------------------------- .smi
def smi_source(path: str) -> Source:
    """One molecule per line: `SMILES [whitespace name]`; id = 0-based line number, name = the
    rest of the line."""
    check_file(path)

    def items():
        with open_text(path) as f:
            for line_no, line in enumerate(f):
                tokens = line.split()
                if not tokens:
                    yield SourceItem(line_no, skip_reason="empty_line")
                elif line_no == 0 and tokens[0].lower() == "smiles":
                    continue  # Header line.
                else:
                    yield SourceItem(line_no, smiles=tokens[0], name=" ".join(tokens[1:]))

    return Source(name=os.path.abspath(path), kind="smi", label_names=[], items=items)


# ---------------------------------------------------------------- .csv
_MISSING_MARKERS = ("nan", "na", "none")  # Cells that mean "no label", as a blank does.
BAD_LABEL = "bad_label"  # Skip reason of rows whose label cell is not a number.


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


def _csv_labels(
    path: str, header: list[str], columns: list[str] | None, skip: set[str], skip_bad: bool
) -> tuple[list[str], np.ndarray, set[int]]:
    """-> (label columns, labels [M, T] float (NaN = missing), rows with a non-numeric label).

    Named `columns` must hold numbers (UserError naming the first bad rows; with `skip_bad`
    those rows are skipped instead); None takes every column (but `skip` and id-like ones)
    whose non-blank cells are all numbers, and logs the ones it leaves out.
    """
    import pandas as pd

    named = columns is not None
    if not named:
        columns = [c for c in header if c not in skip and c.strip().lower() not in _ID_COLUMNS]
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{path}: label columns {missing} not in {header}")
    table = pd.read_csv(path, usecols=columns, dtype=str, keep_default_na=False)
    kept, values, bad_rows = [], [], set()
    for column in columns:
        cells = table[column].tolist()
        parsed, bad = parse_numbers(cells)
        if named and bad and not skip_bad:
            raise UserError(
                f"{path}: label column {column!r} has {bad_cells(cells, bad)}; labels must be "
                f"numbers, blank for missing (or skip those rows, counted as {BAD_LABEL}, with "
                "--skip_bad_labels)"
            )
        if not named and (bad or np.isnan(parsed).all()):
            why = bad_cells(cells, bad) if bad else "no values"
            logging.warning("%s: column %r is not a label column: %s.", path, column, why)
            continue
        kept.append(column)
        values.append(parsed)
        bad_rows.update(bad)
    labels = np.stack(values, axis=1) if values else np.zeros((len(table), 0))
    return kept, labels, bad_rows


def csv_source(
    path: str,
    smiles_column: str | None = None,
    label_columns: list[str] | None = None,
    id_column: str | None = None,
    skip_bad_labels: bool = False,
) -> Source:
    """CSV with a SMILES column (named `smiles` in any case unless given) and optional label
    columns (`_csv_labels`; pass [] for none). id = 0-based data row; name = the `id_column`
    cell when given; blank label cells become NaN (missing), and rows with a label cell that
    is not a number are a UserError, or with `skip_bad_labels` skipped as `bad_label`."""
    import pandas as pd

    check_file(path)
    require_unique_columns(path)
    header = pd.read_csv(path, nrows=0).columns.tolist()
    smiles_column = find_smiles_column(header, smiles_column, path)
    if id_column and id_column not in header:
        raise ValueError(f"{path}: id column {id_column!r} not in {header}")
    label_columns, labels, bad_rows = _csv_labels(
        path, header, label_columns, {smiles_column}, skip_bad_labels
    )

    def items():
        row = 0
        columns = [smiles_column, id_column] if id_column else [smiles_column]
        # SMILES and ids are text: "NA" or "None" is a cell to parse and echo, not a blank.
        chunks = pd.read_csv(
            path, usecols=columns, dtype=str, chunksize=50_000, keep_default_na=False
        )
        for chunk in chunks:
            smiles = chunk[smiles_column].tolist()
            names = chunk[id_column].fillna("").tolist() if id_column else [""] * len(chunk)
            for i, s in enumerate(smiles):
                values = tuple(labels[row].tolist()) if label_columns else None
                if row in bad_rows:
                    yield SourceItem(row, skip_reason=BAD_LABEL, name=names[i])
                elif not isinstance(s, str) or not s.strip():
                    yield SourceItem(row, skip_reason="empty_smiles", name=names[i])
                else:
                    yield SourceItem(row, smiles=s.strip(), labels=values, name=names[i])
                row += 1

    return Source(
        name=os.path.abspath(path), kind="csv", label_names=list(label_columns), items=items
    )


# ---------------------------------------------------------------- .sdf
def sdf_properties(block: str) -> dict[str, str]:
    """The SD data items of one SDF record (`> <NAME>` followed by value lines) as text."""
    properties: dict[str, str] = {}
    _, _, data = block.partition("M  END")
    name, values = None, []
    for line in data.splitlines() + [""]:
        if line.startswith(">"):
            start, end = line.find("<"), line.rfind(">")
            name, values = (line[start + 1 : end] if 0 <= start < end else ""), []
        elif name is not None and not line.strip():
            properties[name] = "\n".join(values).strip()
            name = None
        elif name is not None:
            values.append(line)
    return properties


def sdf_source(path: str) -> Source:
    """SDF (optionally .gz): graph and coordinates from each block; id = 0-based block index,
    name = the block's title line."""
    check_file(path)

    def items():
        for index, block in enumerate(iter_sdf_blocks(path)):
            yield SourceItem(index, mol_block=block, name=sdf_title(block))

    return Source(
        name=os.path.abspath(path),
        kind="sdf",
        label_names=[],
        items=items,
        default_conformers="file",
    )


# ---------------------------------------------------------------- in-memory tables
def table_source(
    name: str,
    ids: Sequence[int],
    smiles: Sequence[str],
    labels: np.ndarray,
    label_names: Sequence[str],
    names: Sequence[str] | None = None,
    mol_blocks: Sequence[str] | None = None,
    skip_reasons: Sequence[str] | None = None,
) -> Source:
    """Rows already in memory (a fine-tuning data set): ids [M], SMILES [M], labels [M, T]
    float (NaN = missing), optional names [M], SDF mol blocks [M] (then the molecule, with
    its coordinates, is the block) and skip reasons [M] (a row with one is skipped and counted
    under it; "" = kept). The source is keyed by a hash of its content."""
    labels = np.asarray(labels, np.float32).reshape(len(smiles), len(label_names))
    names = list(names) if names is not None else [""] * len(smiles)
    blocks = list(mol_blocks) if mol_blocks is not None else [""] * len(smiles)
    ids = [int(i) for i in ids]
    if not len(ids) == len(smiles) == len(names) == len(blocks):
        raise ValueError(f"{name}: {len(ids)} ids, {len(smiles)} SMILES, {len(names)} names")
    reasons = list(skip_reasons) if skip_reasons is not None else [""] * len(smiles)
    content = (ids, list(smiles), names, list(label_names))
    content += (blocks,) if mol_blocks is not None else ()
    content += (reasons,) if skip_reasons is not None else ()
    digest = hashlib.sha256(repr(content).encode())
    digest.update(labels.tobytes())

    def items():
        rows = zip(ids, smiles, labels.tolist(), names, blocks, reasons, strict=True)
        for mol_id, smi, values, title, block, reason in rows:
            if reason:
                yield SourceItem(mol_id, skip_reason=reason, name=title)
            elif block:
                yield SourceItem(mol_id, mol_block=block, labels=tuple(values), name=title)
            elif not isinstance(smi, str) or not smi.strip():
                yield SourceItem(mol_id, skip_reason="empty_smiles", name=title)
            else:
                yield SourceItem(mol_id, smiles=smi.strip(), labels=tuple(values), name=title)

    return Source(
        name=name,
        kind="table",
        label_names=list(label_names),
        items=items,
        total=len(ids),
        fingerprint=digest.hexdigest(),
    )


def open_source(
    input_path: str,
    smiles_column: str | None = None,
    label_columns: list[str] | None = None,
    labels_csv: str | None = None,
    id_column: str | None = None,
    skip_bad_labels: bool = False,
) -> Source:
    """Picks the reader from the name: `qm9` / `moses` (bundled), *.smi / *.txt, *.csv(.gz),
    *.sdf(.gz) (PCQM4Mv2 when the file is `pcqm4m-v2-train.sdf` or a directory holding it)."""
    if input_path in BUNDLED_SOURCES:
        return BUNDLED_SOURCES[input_path]()
    base = os.path.basename(input_path.rstrip("/")).lower()
    if os.path.isdir(input_path):
        if os.path.exists(os.path.join(input_path, PCQM_SDF_NAME)):
            return pcqm4mv2_source(input_path, labels_csv)
        raise UserError(f"{input_path}: directory without {PCQM_SDF_NAME}")
    if not os.path.exists(input_path):
        raise MissingFileError(f"input file not found: {input_path}")
    if base.startswith("pcqm4m") and base.endswith((".sdf", ".sdf.gz")):
        return pcqm4mv2_source(input_path, labels_csv)
    if base.endswith((".smi", ".smiles", ".txt", ".smi.gz")):
        return smi_source(input_path)
    if base.endswith((".csv", ".csv.gz")):
        return csv_source(input_path, smiles_column, label_columns, id_column, skip_bad_labels)
    if base.endswith((".sdf", ".sdf.gz")):
        return sdf_source(input_path)
    raise ValueError(
        f"{input_path}: unknown input format (expected .smi, .csv, .sdf, qm9 or moses)"
    )


@dataclasses.dataclass(frozen=True)
class FileInput:
    """A file path (or a bundled name: qm9, moses) and how to read it: `open_source`'s
    arguments, which the shards' metadata.json records."""

    path: str
    smiles_column: str | None = None
    label_columns: list[str] | None = None
    labels_csv: str | None = None
    skip_bad_labels: bool = False  # CSV rows with a non-numeric named label: skipped, counted.

    def open(self) -> Source:
        return open_source(
            self.path,
            self.smiles_column,
            self.label_columns,
            self.labels_csv,
            skip_bad_labels=self.skip_bad_labels,
        )
