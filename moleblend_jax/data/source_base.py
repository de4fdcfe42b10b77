"""What every source reader shares: the item and source types, file checks, SDF blocks.

Readers of your own files are in `sources`, the public data sets in `public_sets`.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from collections.abc import Callable, Iterator

from moleblend_jax.errors import MissingFileError, UserError


@dataclasses.dataclass(frozen=True)
class SourceItem:
    """One source molecule, as read (small and picklable: workers receive lists of them).

    The molecule is `mol_block` (SDF text, graph and coordinates) when set, else `smiles`;
    `elements` + `xyz` are a geometry given with the molecule, as strings in qm9pack's Elements
    / XYZ_Ang format: QM9's DFT one, or a Uni-Mol LMDB record's first conformer
    (`unimol_lmdb`; heavy atoms only, in the SMILES's order).
    `skip_reason` marks an entry rejected while reading (e.g. an empty line).
    """

    id: int
    smiles: str = ""
    mol_block: str = ""
    labels: tuple[float, ...] | None = None  # NaN = missing.
    name: str = ""  # .smi name column, SDF title; "" = none.
    elements: str = ""
    xyz: str = ""
    skip_reason: str = ""


@dataclasses.dataclass
class Source:
    """A readable input: `items()` yields `SourceItem`s in source order."""

    name: str
    kind: str  # smi | csv | sdf | pcqm4mv2 | qm9 | moses | table
    label_names: list[str]
    items: Callable[[], Iterator[SourceItem]]
    total: int | None = None  # Number of items when known up front (progress bar).
    default_conformers: str = "rdkit"  # For sources without coordinates.
    notes: dict = dataclasses.field(default_factory=dict)
    # Content hash of sources that are not a file (`table_source`): build_shards' args hold it,
    # so changed content rebuilds the shards.
    fingerprint: str | None = None


def check_file(path: str) -> None:
    if not os.path.exists(path):
        raise MissingFileError(f"input file not found: {path}")
    if os.path.isdir(path):
        return
    if os.path.getsize(path) == 0:
        raise UserError(f"input file is empty: {path}")
    check_text(path)


def check_text(path: str) -> None:
    """UserError for a file whose start (after gunzip) holds NUL bytes: not text."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(1 << 16)
    except (OSError, EOFError) as err:
        raise UserError(f"{path}: unreadable ({err})") from None
    if b"\x00" in head:
        raise UserError(f"{path}: not a text file (NUL bytes in its first {len(head)} bytes)")


def open_text(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def iter_sdf_blocks(path: str) -> Iterator[str]:
    """Yields the mol-block text of every SDF record (`$$$$`-terminated), properties included."""
    with open_text(path) as f:
        lines: list[str] = []
        for line in f:
            if line.startswith("$$$$"):
                yield "".join(lines)
                lines = []
            else:
                lines.append(line)
        if any(line.strip() for line in lines):
            yield "".join(lines)  # Last record without a terminator.


def sdf_title(block: str) -> str:
    """The title (first) line of a mol block."""
    return block.split("\n", 1)[0].strip()
