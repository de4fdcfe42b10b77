"""Row layouts of the original's embedding tables and our per-feature tables (SPEC 1).

The original indexes one flat table per input kind with `raw id + offset + 512 f`; this repository
keeps one [V, C] table per feature, indexed with the shifted id s = raw id + 1 (0 = padding). A
`RowLayout` says which original row holds our row (f, s), and converts both ways. Conversions
return notes for what one side cannot hold, so the caller can report it.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class FairseqTables:
    """Row counts of the original's tables (its task arguments; these are its defaults)."""

    num_atoms: int = 512 * 9
    num_edges: int = 512 * 3
    num_spatial: int = 512
    num_in_degree: int = 512
    num_out_degree: int = 512
    num_edge_dis: int = 128


@dataclasses.dataclass(frozen=True)
class RowLayout:
    """Original row of our (f, s): `bases[f] + s` for s >= 1; `pad_rows[f]` is the row the
    original reads for a padded input.

    Our row 0 is read as exactly zero (`model.layers.without_pad_row`), as the original's
    `padding_idx=0` rows are; so import leaves it zero and export writes zero pad rows. (The
    Gaussian pair-type tables read trainable rows 1 / 513 for padded pairs, which only masked
    attention entries use: import drops them, noted.) A real row is representable when it lies
    inside the table, below the next feature's first real row (`bases[f + 1] + 1`) and is no pad
    row.
    """

    bases: tuple[int, ...]
    pad_rows: tuple[int, ...]

    def real_rows(self, vocab: int, num_rows: int) -> tuple[list[tuple[int, int, int]], int]:
        """-> ([(f, s, original row)] for representable s in 1..vocab-1, count of the others)."""
        pairs, unrepresentable = [], 0
        for f, base in enumerate(self.bases):
            end = self.bases[f + 1] + 1 if f + 1 < len(self.bases) else num_rows
            for s in range(1, vocab):
                row = base + s
                if row < min(end, num_rows) and row not in self.pad_rows:
                    pairs.append((f, s, row))
                else:
                    unrepresentable += 1
        return pairs, unrepresentable


def _nonzero_rows(table: np.ndarray, rows) -> int:
    rows = sorted(rows)
    return int(np.count_nonzero(np.any(table[rows] != 0, axis=-1))) if rows else 0


def table_to_ours(
    layout: RowLayout, table: np.ndarray, vocab: int, name: str
) -> tuple[np.ndarray, list[str]]:
    """[R, C] original table -> ([F, vocab, C] ours, notes). Our rows without an original row
    are zero; original rows we do not read are dropped (noted when nonzero)."""
    num_rows, width = table.shape
    pairs, unrepresentable = layout.real_rows(vocab, num_rows)
    ours = np.zeros((len(layout.bases), vocab, width), np.float32)
    read = set()
    for f, s, row in pairs:
        ours[f, s] = table[row]
        read.add(row)
    notes = []
    dropped = _nonzero_rows(table, set(range(num_rows)) - read)
    if dropped:
        notes.append(f"{name}: {dropped} nonzero rows that no id of our tables reaches, dropped")
    if unrepresentable:
        notes.append(f"{name}: our ids without a row in the original: {unrepresentable} (kept 0)")
    return ours, notes


def table_to_original(
    layout: RowLayout, ours: np.ndarray, num_rows: int, name: str
) -> tuple[np.ndarray, list[str]]:
    """[F, V, C] ours -> ([num_rows, C] original table, notes); pad and unused rows are zero."""
    vocab, width = ours.shape[1:]
    pairs, _ = layout.real_rows(vocab, num_rows)
    table = np.zeros((num_rows, width), np.float32)
    written = np.zeros(ours.shape[:2], bool)
    written[:, 0] = True  # Our pad rows are never read.
    for f, s, row in pairs:
        table[row] = ours[f, s]
        written[f, s] = True
    lost = int(np.count_nonzero(np.any(ours[~written] != 0, axis=-1)))
    notes = (
        [f"{name}: {lost} nonzero rows of ids the original cannot index, dropped"] if lost else []
    )
    return table, notes


# The original's layouts (docs/interop.md; the offsets its data pipeline and collator add).
ATOMS = RowLayout(bases=tuple(512 * f + 1 for f in range(9)), pad_rows=(0,) * 9)
BONDS = RowLayout(bases=tuple(512 * f + 2 for f in range(3)), pad_rows=(0,) * 3)
# Gaussian pair-type affine: the i side at atomic-number id + 3, the j side at + 515.
PAIR_TYPES = RowLayout(bases=(2, 514), pad_rows=(1, 513))
IDENTITY = RowLayout(bases=(0,), pad_rows=(0,))  # SPD and degree ids are the original's rows.
