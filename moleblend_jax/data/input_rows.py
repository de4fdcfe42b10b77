"""New molecules -> records in memory, one row per input row (prediction and embeddings).

An input file (.csv, .smi, .sdf, read by `data.sources`) or a list of SMILES becomes one
`Featurized` row per input row, in input order: the record, or None and the reason it could
not be featurised. SMILES are canonicalised first (RDKit's canonical SMILES, whose atom order
depends only on the molecule), so every spelling of a molecule gives the same record. The work
is the shard writer's (`featurize.featurize_items`, `workers` processes), without files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

from moleblend_jax.data import featurize, serialize
from moleblend_jax.data.sources import SourceItem, open_source
from moleblend_jax.errors import UserError
from moleblend_jax.schema import MAX_SUPPORTED_ATOMS


@dataclasses.dataclass(frozen=True)
class Featurized:
    """Input rows, in input order: ids [M] (the source's row keys), names [M] (id column,
    SDF title or .smi name; "" = none), inputs [M] (the SMILES as given, "" for SDF),
    records [M] (None where featurisation failed) and errors [M] ("" where it did not)."""

    ids: list[int]
    names: list[str]
    inputs: list[str]
    records: list[dict | None]
    errors: list[str]

    @property
    def valid(self) -> list[bool]:
        return [r is not None for r in self.records]

    def require_any_valid(self, source: str) -> None:
        """UserError naming the failure reasons when no row of `source` could be featurised."""
        if not any(self.valid):
            reasons = sorted(set(self.errors))
            raise UserError(
                f"{source}: no valid molecules among {len(self.records)} rows ({reasons})"
            )

    def row_ids(self) -> list[str]:
        """The id to print per row: its name, else its row key."""
        return [name or str(i) for name, i in zip(self.names, self.ids, strict=True)]


def canonical_smiles(smiles: str) -> str:
    """RDKit's canonical SMILES, or `smiles` unchanged when RDKit cannot parse it (the
    featurisation then reports why)."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    return Chem.MolToSmiles(mol) if mol is not None else smiles


def input_items(
    path: str, smiles_column: str | None = None, id_column: str | None = None
) -> list[SourceItem]:
    """The rows of a .csv / .smi / .sdf file as source items (no labels read); UserError for a
    missing or unreadable file or column."""
    try:
        source = open_source(path, smiles_column or None, [], id_column=id_column or None)
        return list(source.items())
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None


def smiles_items(smiles: Sequence[str]) -> list[SourceItem]:
    """A list of SMILES as source items keyed 0..M-1."""
    return [
        SourceItem(i, smiles=s.strip()) if s and s.strip() else SourceItem(i, skip_reason="empty")
        for i, s in enumerate(smiles)
    ]


_WHY = {
    "invalid_smiles": "RDKit cannot parse the SMILES",
    "valence_error": "an atom exceeds its allowed valence",
    "kekulize_error": "the aromatic system cannot be kekulized",
    "empty_smiles": "no SMILES in this row",
    "empty_line": "empty line",
    "sdf_parse_error": "RDKit cannot read this SDF record",
}


def _explain(reason: str, max_atoms: int) -> str:
    """A skip reason of the shard writer -> the `error` text of its row."""
    if reason == "too_many_atoms":
        return f"too_many_atoms: more than {max_atoms} heavy atoms"
    return f"{reason}: {_WHY[reason]}" if reason in _WHY else reason


def _results(items: list[SourceItem], conformers, max_atoms, workers, progress) -> Iterator:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="mol", desc="featurise")
    for results in featurize.featurize_items(items, conformers, max_atoms, workers=workers):
        yield from results
        if bar is not None:
            bar.update(len(results))
    if bar is not None:
        bar.close()


def featurize_rows(
    items: Iterable[SourceItem],
    conformers: str = "none",
    max_atoms: int = MAX_SUPPORTED_ATOMS,
    workers: int = 1,
    progress: bool = False,
    require_coords: bool = False,
) -> Featurized:
    """Source items -> `Featurized` (see the module docstring). conformers: "none" (2D),
    "rdkit" (ETKDG + MMFF) or "file" (an SDF's coordinates; SMILES rows get none);
    `require_coords` (a 3D model) makes molecules without coordinates invalid."""
    given = list(items)
    items = [
        dataclasses.replace(item, smiles=canonical_smiles(item.smiles)) if item.smiles else item
        for item in given
    ]
    records, errors = [], []
    for result in _results(items, conformers, max_atoms, workers, progress):
        if result[0] == "skip":
            records.append(None)
            errors.append(_explain(result[2], max_atoms))
            continue
        record = serialize.decode_record(result[2])
        if require_coords and not record["has_coords"]:
            records.append(None)
            errors.append(f"no_3d_coordinates (conformer: {result[4]})")
        else:
            records.append(record)
            errors.append("")
    return Featurized(
        ids=[item.id for item in items],
        names=[item.name for item in items],
        inputs=[item.smiles for item in given],
        records=records,
        errors=errors,
    )
