"""Build TFRecord shards from an input source (docs/data.md).

Determinism: the source is read in order in the parent, processed in fixed-size chunks by W
worker processes, and the results are written back in source order; the k-th written record goes
to shard k % num_shards. Output bytes therefore depend only on the input and the arguments, never
on W. Atomicity: shards are written under temporary names and renamed at the end, and
metadata.json is written last (also via rename); a directory without metadata.json is
incomplete, and rerunning rebuilds it. Rerunning a completed build with the same arguments is a
no-op.
"""

from __future__ import annotations

import collections
import glob
import hashlib
import itertools
import json
import multiprocessing
import os

import numpy as np

from moleblend_jax.data import serialize
from moleblend_jax.data.sources import open_source
from moleblend_jax.schema import (
    MAX_SUPPORTED_ATOMS,
    METADATA_FILE,
    SCHEMA_VERSION,
    SHARD_SUFFIX,
)

CHUNK_SIZE = 128  # Source items per worker task.
CONFORMER_MODES = ("rdkit", "none", "file")
QM9_MAX_BOND = 2.0  # Angstrom; longer SMILES bonds mean the XYZ atom order differs.
_TMP_PREFIX = ".tmp-"


def shard_name(index: int, num_shards: int) -> str:
    return f"shard-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


# ---------------------------------------------------------------- per-item work (in workers)
def _qm9_coords(mol, elements: str, xyz: str) -> np.ndarray:
    """Heavy-atom DFT coordinates of a QM9 entry in the SMILES mol's atom order.

    QM9's XYZ lists heavy atoms in SMILES order for almost all entries; for the rest (~0.3%)
    the order is recovered by matching the SMILES graph onto the XYZ connectivity.
    """
    from moleblend_jax.chem.conformers import parse_xyz_block
    from moleblend_jax.chem.records import SkipMolecule

    symbols = [e.strip(" '\"") for e in elements.strip("[] ").split(",")]
    positions = parse_xyz_block(xyz, len(symbols))
    heavy = [i for i, s in enumerate(symbols) if s != "H"]
    mol_symbols = [mol.GetAtomWithIdx(i).GetSymbol() for i in range(mol.GetNumAtoms())]
    if mol_symbols == [symbols[i] for i in heavy]:
        coords = positions[heavy]
        bonds = [mol.GetBondWithIdx(i) for i in range(mol.GetNumBonds())]
        ends = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in bonds], int)
        ends = ends.reshape(-1, 2)
        lengths = np.linalg.norm(coords[ends[:, 0]] - coords[ends[:, 1]], axis=-1)
        # Same elements but a bond far too long: the order differs (e.g. C#CC#C), match it.
        if not len(lengths) or lengths.max() < QM9_MAX_BOND:
            return coords
    match = _match_by_connectivity(mol, [symbols[i] for i in heavy], positions[heavy])
    if match is None:
        raise SkipMolecule("qm9_coords_mismatch")
    return positions[heavy][list(match)]


def _match_by_connectivity(mol, symbols, positions):
    """Maps mol atoms onto XYZ atoms whose bonds are guessed from covalent radii, or None."""
    from rdkit import Chem

    if sorted(symbols) != sorted(a.GetSymbol() for a in mol.GetAtoms()):
        return None
    table = Chem.GetPeriodicTable()
    target = Chem.RWMol()
    for s in symbols:
        target.AddAtom(Chem.Atom(s))
    radii = np.array([table.GetRcovalent(s) for s in symbols])
    dist = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    bonded = np.triu(dist < 1.25 * (radii[:, None] + radii[None]), 1)
    for i, j in zip(*np.nonzero(bonded), strict=True):
        target.AddBond(int(i), int(j), Chem.BondType.SINGLE)
    query = Chem.RWMol(mol)
    for atom in query.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetIsAromatic(False)
        atom.SetNoImplicit(True)
    for bond in query.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
        bond.SetIsAromatic(False)
    match = target.GetSubstructMatch(query)
    return match if len(match) == mol.GetNumAtoms() else None


def item_to_record(item: tuple, conformers: str, max_atoms: int, seed: int = 0):
    """One source item -> (record with `next_hop` instead of `path_bonds`, conformer reason);
    raises SkipMolecule(reason)."""
    from rdkit import Chem

    from moleblend_jax.chem.records import SkipMolecule, build_record, parse_smiles

    kind, mol_id = item[0], item[1]
    if kind == "skip":
        raise SkipMolecule(item[2])
    if kind == "smiles":
        mol = parse_smiles(item[2])
        coords = "none" if conformers == "file" else conformers
        return build_record(mol, mol_id, coords, item[3], max_atoms, seed, True)
    if kind == "molblock":
        mol = Chem.MolFromMolBlock(item[2], removeHs=True)
        if mol is None:
            raise SkipMolecule("sdf_parse_error")
        coords = None if conformers == "file" else conformers
        return build_record(mol, mol_id, coords, item[3], max_atoms, seed, True)
    if kind == "qm9":
        mol = parse_smiles(item[2])
        if conformers == "file":
            if mol.GetNumAtoms() > max_atoms:
                raise SkipMolecule("too_many_atoms")
            try:
                coords = _qm9_coords(mol, item[3], item[4])
            except ValueError as err:
                raise SkipMolecule("qm9_bad_xyz", str(err)) from None
        else:
            coords = conformers
        return build_record(mol, mol_id, coords, item[5], max_atoms, seed, True)
    raise ValueError(f"unknown item kind {kind!r}")


def process_chunk(items: list, conformers: str, max_atoms: int, seed: int) -> list:
    """Worker task: items -> [("ok", id, bytes, n_atoms, conformer) | ("skip", id, reason)]."""
    from moleblend_jax.chem.records import SkipMolecule

    out = []
    for item in items:
        try:
            record, conformer = item_to_record(item, conformers, max_atoms, seed)
            data = serialize.encode_record(record, record.pop("next_hop"))
            out.append(("ok", item[1], data, len(record["atom_features"]), conformer))
        except SkipMolecule as skip:
            out.append(("skip", item[1], skip.reason))
        except Exception as err:  # noqa: BLE001 - RDKit can fail in many ways; count, go on.
            out.append(("skip", item[1], f"error_{type(err).__name__}"))
    return out


def _chunks(items, size: int, limit: int | None, offset: int = 0):
    """Lists of `size` source items, from entry `offset` on, at most `limit` in all."""
    chunk = []
    for count, item in enumerate(itertools.islice(items, offset, None)):
        if limit is not None and count >= limit:
            break
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _ordered_map(fn, chunks, workers: int, args: tuple):
    """Ordered results of fn(chunk, *args) with at most 4 * workers chunks in flight."""
    if workers <= 1:
        for chunk in chunks:
            yield fn(chunk, *args)
        return
    # forkserver: safe when the caller already runs threads (jax, TF); workers import only
    # numpy/RDKit.
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(workers) as pool:
        pending = collections.deque()
        for chunk in chunks:
            pending.append(pool.apply_async(fn, (chunk, *args)))
            if len(pending) >= 4 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ---------------------------------------------------------------- build
def _clean(output: str) -> None:
    for path in glob.glob(os.path.join(output, _TMP_PREFIX + "*")):
        os.remove(path)
    for path in glob.glob(os.path.join(output, "shard-*" + SHARD_SUFFIX)):
        os.remove(path)


def read_metadata(data_dir: str) -> dict | None:
    path = os.path.join(data_dir, METADATA_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def build_shards(
    input: str,  # noqa: A002 - the CLI flag's name.
    output: str,
    num_shards: int = 16,
    workers: int = 2,
    max_atoms: int = MAX_SUPPORTED_ATOMS,
    conformers: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    smiles_column: str | None = None,
    label_columns: list[str] | None = None,
    labels_csv: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Reads `input` (a file path or `qm9`), writes OUTPUT/shard-*.tfrecord + metadata.json.

    conformers: 'file' (coordinates from the source: SDF / QM9 DFT; SMILES sources get none),
    'rdkit' (ETKDG + MMFF for every molecule) or 'none' (has_coords = 0); default: 'file' for
    sources with coordinates, else 'rdkit'. offset, limit: only source entries offset ..
    offset + limit - 1 (limit None: to the end), e.g. a held-out set after a training prefix.
    Returns the metadata dict. Raises FileNotFoundError / ValueError for a missing or empty
    input and ValueError when no molecule could be written.
    """
    source = open_source(input, smiles_column, label_columns, labels_csv)
    conformers = conformers or source.default_conformers
    if conformers not in CONFORMER_MODES:
        raise ValueError(f"conformers must be one of {CONFORMER_MODES}, got {conformers!r}")
    if not 1 <= max_atoms <= MAX_SUPPORTED_ATOMS:
        raise ValueError(f"max_atoms must be in [1, {MAX_SUPPORTED_ATOMS}], got {max_atoms}")
    if num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    # Everything that determines the output bytes (not workers / progress).
    args = dict(
        input=input if input == "qm9" else os.path.abspath(input),
        num_shards=num_shards,
        max_atoms=max_atoms,
        conformers=conformers,
        limit=limit,
        **({"offset": offset} if offset else {}),  # Absent at 0: older builds stay valid.
        smiles_column=smiles_column,
        label_columns=label_columns,
        labels_csv=labels_csv,
        seed=seed,
    )
    os.makedirs(output, exist_ok=True)
    existing = read_metadata(output)
    if existing is not None and existing.get("args") == args and _shards_present(output, existing):
        return existing
    # Drop the old metadata first: from here on the directory does not look complete.
    if existing is not None:
        os.remove(os.path.join(output, METADATA_FILE))
    _clean(output)

    names = [shard_name(i, num_shards) for i in range(num_shards)]
    tmp_paths = [os.path.join(output, _TMP_PREFIX + n) for n in names]
    files = [open(p, "wb") for p in tmp_paths]  # noqa: SIM115 - closed below.
    hashes = [hashlib.sha256() for _ in names]
    shard_counts = [collections.Counter() for _ in names]
    skipped = collections.Counter()
    conformer_counts = collections.Counter()
    num_written = 0
    total = None if source.total is None else max(source.total - offset, 0)  # Progress bar.
    if limit is not None:
        total = limit if total is None else min(limit, total)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="mol", desc=f"shards {os.path.basename(output)}")
    try:
        chunks = _chunks(source.items(), CHUNK_SIZE, limit, offset)
        for results in _ordered_map(process_chunk, chunks, workers, (conformers, max_atoms, seed)):
            for result in results:
                if result[0] == "skip":
                    skipped[result[2]] += 1
                    continue
                _, _, data, n_atoms, conformer = result
                shard = num_written % num_shards
                framed = serialize.frame(data)
                files[shard].write(framed)
                hashes[shard].update(framed)
                shard_counts[shard][n_atoms] += 1
                conformer_counts[conformer] += 1
                num_written += 1
            if bar is not None:
                bar.update(len(results))
    finally:
        for f in files:
            f.close()
        if bar is not None:
            bar.close()
    if num_written == 0:
        _clean(output)
        raise ValueError(f"{input}: no molecule could be read (skipped: {dict(skipped)})")

    histogram = collections.Counter()
    for counts in shard_counts:
        histogram.update(counts)
    total_bytes = sum(os.path.getsize(p) for p in tmp_paths)
    shards = []
    for name, tmp, digest, counts in zip(names, tmp_paths, hashes, shard_counts, strict=True):
        shards.append(
            dict(
                file=name,
                num_records=sum(counts.values()),
                bytes=os.path.getsize(tmp),
                sha256=digest.hexdigest(),
                atom_counts={str(k): v for k, v in sorted(counts.items())},
            )
        )
        os.replace(tmp, os.path.join(output, name))
    metadata = dict(
        schema_version=SCHEMA_VERSION,
        source=source.name,
        source_kind=source.kind,
        source_notes=source.notes,
        args=args,
        num_written=num_written,
        num_skipped=sum(skipped.values()),
        skipped=dict(sorted(skipped.items())),
        conformers=dict(sorted(conformer_counts.items())),
        label_names=source.label_names,
        num_labels=len(source.label_names),
        max_atoms_seen=max(histogram),
        atom_count_histogram={str(k): v for k, v in sorted(histogram.items())},
        total_bytes=total_bytes,
        bytes_per_molecule=total_bytes / num_written,
        shards=shards,
    )
    tmp_meta = os.path.join(output, _TMP_PREFIX + METADATA_FILE)
    with open(tmp_meta, "w") as f:
        json.dump(metadata, f, indent=1)
    os.replace(tmp_meta, os.path.join(output, METADATA_FILE))
    return metadata


def _shards_present(output: str, metadata: dict) -> bool:
    return all(
        os.path.exists(os.path.join(output, s["file"]))
        and os.path.getsize(os.path.join(output, s["file"])) == s["bytes"]
        for s in metadata.get("shards", [])
    )
