"""Uni-Mol's `molecular_property_prediction` LMDB files: the paper's fine-tuning data.

Layout (Uni-Mol's `unimol/tasks/unimol_finetune.py`, read the same way by MoleBLEND's
`molnet_datasets.py`): one directory per data set holding `train.lmdb`, `valid.lmdb` and
`test.lmdb`, each a single-file LMDB environment (`subdir=False`) whose values are pickled
dicts, keyed by the record's index as ASCII text (b"0", b"1", ...). The fields read:

  smi          the SMILES
  target       the labels: one number or a sequence of T numbers. Classification labels are
               0 / 1 with -1 for a missing one (Uni-Mol's multi-task BCE keeps targets > -0.5)
  atoms        [n] element symbols of `AddHs(MolFromSmiles(smi))`: the SMILES's atoms in
               order, then the hydrogens AddHs appended
  coordinates  a list of conformers, each [n, 3] in the order of `atoms` (Uni-Mol wrote ten
               RDKit conformers and a 2D layout last)

Other fields (`mol`, `scaffold`, ...) are ignored. The split is the files' (record ids run
over train, then valid, then test); reading the pickles executes whatever they hold, so read
only files you trust, as Uni-Mol's own loader does.

Hydrogens: the molecule is `smi` read by RDKit (`Chem.MolFromSmiles`, hydrogens implicit), as
the original builds its graph from `smi`; when 3D is wanted its coordinates are the record's
first conformer at the SMILES's atoms, i.e. the first `mol.GetNumAtoms()` rows, checked to
carry the same elements with only hydrogens after them. The original drops every row whose
symbol is "H" instead, the same rows for every molecule whose SMILES holds no explicit
hydrogen atom; for one that does (`[2H]`, `[H][H]`) it would misalign, the prefix does not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
from collections.abc import Iterator, Sequence

import numpy as np

from moleblend_jax.data.source_base import Source, SourceItem
from moleblend_jax.errors import MissingFileError, UserError

PARTS = ("train", "valid", "test")
FILE_OF_PART = {part: f"{part}.lmdb" for part in PARTS}

# Skip reasons of records the reader rejects (counted in the shards' metadata.json).
BAD_RECORD = "lmdb_bad_record"  # Not an unpicklable dict.
NO_SMILES = "lmdb_no_smiles"
NO_TARGET = "lmdb_no_target"
NO_CONFORMER = "lmdb_no_conformer"  # 3D wanted; no atoms or coordinates in the record.
ATOMS_MISMATCH = "lmdb_atoms_mismatch"  # 3D wanted; atoms or conformer do not fit the SMILES.


@dataclasses.dataclass(frozen=True)
class LmdbMolecule:
    """One record of a split file, as read.

    `target` [T] float64 as written (a missing classification label is still -1 here);
    `conformer` the first conformer [n, 3] float32 and `atoms` its [n] symbols, or None when
    the record has none; `skip_reason` is set for a record that cannot be used.
    """

    part: str
    key: str
    smiles: str
    target: np.ndarray | None
    atoms: tuple[str, ...] | None = None
    conformer: np.ndarray | None = None
    skip_reason: str = ""

    @property
    def name(self) -> str:
        """Where the record came from: `train.lmdb:17`."""
        return f"{FILE_OF_PART[self.part]}:{self.key}"


def _open(path: str):
    try:
        import lmdb  # noqa: PLC0415 - an optional dependency (the `lmdb` extra).
    except ImportError:
        raise UserError(
            "reading Uni-Mol LMDB files needs lmdb: pip install 'moleblend-jax[lmdb]' (or lmdb)"
        ) from None

    try:
        return lmdb.open(
            path, subdir=False, readonly=True, lock=False, readahead=False, meminit=False
        )
    except lmdb.Error as err:
        raise UserError(f"{path}: not a readable LMDB file ({err})") from None


def _key_order(key: bytes) -> tuple:
    """Uni-Mol's order: keys are record indices as text; others after them, bytewise."""
    text = key.decode("ascii", errors="replace")
    return (0, int(text), b"") if text.isdigit() else (1, 0, key)


def iter_file(path: str) -> Iterator[tuple[str, bytes]]:
    """(key, pickled value) of every record of one LMDB file, in record-index order."""
    env = _open(path)
    try:
        with env.begin() as txn:
            keys = sorted(txn.cursor().iternext(values=False), key=_key_order)
            for key in keys:
                yield key.decode("ascii", errors="replace"), bytes(txn.get(key))
    finally:
        env.close()


def _target(value) -> np.ndarray | None:
    """A record's target -> [T] float64 (None / NaN cells stay NaN); None when unusable."""
    if value is None:
        return None
    try:
        target = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    return target if target.size else None


def _first_conformer(record: dict) -> tuple[tuple[str, ...] | None, np.ndarray | None]:
    atoms, conformers = record.get("atoms"), record.get("coordinates")
    if atoms is None or conformers is None or len(conformers) == 0:
        return None, None
    try:
        conformer = np.asarray(conformers[0], dtype=np.float32)
    except (TypeError, ValueError):
        return None, None
    return tuple(str(a) for a in atoms), conformer


def parse_record(part: str, key: str, value: bytes) -> LmdbMolecule:
    """A pickled record -> LmdbMolecule (with a skip reason when a field is missing)."""
    try:
        record = pickle.loads(value)  # noqa: S301 - the format is pickles (module docstring).
    except Exception:  # noqa: BLE001 - a damaged pickle can raise almost anything.
        record = None
    if not isinstance(record, dict):
        return LmdbMolecule(part, key, "", None, skip_reason=BAD_RECORD)
    smiles = record.get("smi")
    if not isinstance(smiles, str) or not smiles.strip():
        return LmdbMolecule(part, key, "", None, skip_reason=NO_SMILES)
    target = _target(record.get("target"))
    atoms, conformer = _first_conformer(record)
    return LmdbMolecule(
        part,
        key,
        smiles.strip(),
        target,
        atoms,
        conformer,
        skip_reason="" if target is not None else NO_TARGET,
    )


def read_set(directory: str | os.PathLike) -> list[LmdbMolecule]:
    """Every record of DIRECTORY/{train,valid,test}.lmdb, in that order (record index order
    within a file). MissingFileError names a missing file; records that cannot be used carry
    their skip reason, and their count per reason is logged."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise MissingFileError(
            f"{directory}: not a directory; a Uni-Mol data set is a directory holding "
            f"{', '.join(FILE_OF_PART.values())}"
        )
    paths = {part: os.path.join(directory, name) for part, name in FILE_OF_PART.items()}
    missing = [os.path.basename(p) for p in paths.values() if not os.path.isfile(p)]
    if missing:
        found = sorted(os.listdir(directory))[:10]
        raise MissingFileError(
            f"{directory}: no {', '.join(missing)} (the directory holds {found})"
        )
    molecules = [
        parse_record(part, key, value) for part in PARTS for key, value in iter_file(paths[part])
    ]
    for part in PARTS:
        if not any(m.part == part for m in molecules):
            raise UserError(f"{paths[part]}: no records")
    skipped = {}
    for m in molecules:
        if m.skip_reason:
            skipped[m.skip_reason] = skipped.get(m.skip_reason, 0) + 1
    if skipped:
        logging.warning("%s: records skipped by reason: %s", directory, skipped)
    return molecules


def heavy_atom_coordinates(mol, atoms: Sequence[str], conformer: np.ndarray) -> np.ndarray:
    """[N, 3] float32 positions of the N atoms of `mol` (`Chem.MolFromSmiles` of the record's
    SMILES): the first N rows of `conformer` (module docstring). Raises ValueError when the
    record's atoms or conformer do not fit the molecule."""
    symbols = [atom.GetSymbol() for atom in mol.GetAtoms()]
    n = len(symbols)
    if conformer.shape != (len(atoms), 3):
        raise ValueError(f"conformer {conformer.shape} for {len(atoms)} atoms")
    if list(atoms[:n]) != symbols or any(s != "H" for s in atoms[n:]):
        raise ValueError(f"atoms {list(atoms)} do not start with the SMILES's {symbols}")
    return conformer[:n]


def _coordinates_item_fields(molecule: LmdbMolecule) -> tuple[str, str, str]:
    """(skip reason, elements, xyz) of a record whose 3D coordinates are wanted. A SMILES
    RDKit cannot read is left to the shard writer, which counts it by its reason."""
    from rdkit import Chem  # noqa: PLC0415 - only the 3D path needs RDKit here.

    if molecule.conformer is None:
        return NO_CONFORMER, "", ""
    mol = Chem.MolFromSmiles(molecule.smiles)
    if mol is None:
        return "", "", ""
    try:
        coords = heavy_atom_coordinates(mol, molecule.atoms, molecule.conformer)
    except ValueError as err:
        logging.info("%s: %s", molecule.name, err)
        return ATOMS_MISMATCH, "", ""
    return "", *_geometry_text(molecule.atoms[: len(coords)], coords)


def _geometry_text(symbols: Sequence[str], xyz: np.ndarray) -> tuple[str, str]:
    """The `SourceItem.elements` / `.xyz` strings of a geometry (the QM9 item's format, read
    back by `chem.qm9.parse_geometry`); float32 values round-trip exactly."""
    elements = "[" + ",".join(f"'{s}'" for s in symbols) + "]"
    rows = ",".join("[" + ",".join(repr(float(v)) for v in row) + "]" for row in xyz)
    return elements, f"[{rows}]"


def lmdb_source(
    name: str,
    molecules: Sequence[LmdbMolecule],
    ids: Sequence[int],
    labels: np.ndarray,
    label_names: Sequence[str],
    with_coordinates: bool,
) -> Source:
    """The shard writer's source of `molecules` (keyed by `ids` [M]; labels [M, T] float,
    NaN = missing): with `with_coordinates`, each item carries its first conformer's
    heavy-atom coordinates (build the shards with conformers="file"); records without a
    usable conformer are skipped as NO_CONFORMER / ATOMS_MISMATCH."""
    labels = np.asarray(labels, np.float32).reshape(len(molecules), len(label_names))
    items = []
    for mol_id, molecule, values in zip(ids, molecules, labels.tolist(), strict=True):
        reason, elements, xyz = molecule.skip_reason, "", ""
        if not reason and with_coordinates:
            reason, elements, xyz = _coordinates_item_fields(molecule)
        items.append(
            SourceItem(
                int(mol_id),
                smiles=molecule.smiles if not reason else "",
                labels=tuple(values) if not reason else None,
                name=molecule.name,
                elements=elements,
                xyz=xyz,
                skip_reason=reason,
            )
        )
    digest = hashlib.sha256(repr((list(label_names), with_coordinates)).encode())
    digest.update(labels.tobytes())
    for item in items:
        digest.update(repr((item.id, item.smiles, item.name, item.xyz, item.skip_reason)).encode())
    return Source(
        name=name,
        kind="unimol_lmdb",
        label_names=list(label_names),
        items=lambda: iter(items),
        total=len(items),
        default_conformers="file" if with_coordinates else "none",
        fingerprint=digest.hexdigest(),
    )
