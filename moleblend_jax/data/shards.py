"""Build TFRecord shards from an input source (docs/data.md).

Determinism: the source is read in order in the parent, processed in fixed-size chunks by W
worker processes, and the results are written back in source order; the k-th written record goes
to shard k % num_shards. Output bytes therefore depend only on the input and the arguments, never
on W. Atomicity: shards are written under temporary names and renamed at the end, and
metadata.json is written last (also via rename); a directory without metadata.json is
incomplete, and rerunning rebuilds it. Rerunning a completed build with the same arguments is a
no-op once every shard's size and sha256 match metadata.json (a damaged shard is rebuilt).
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import hashlib
import itertools
import json
import multiprocessing
import os
import zlib

from etils import epath

from moleblend_jax.data import serialize
from moleblend_jax.data.sources import Source, SourceItem, open_source
from moleblend_jax.errors import UserError
from moleblend_jax.schema import (
    MAX_SUPPORTED_ATOMS,
    METADATA_FILE,
    SCHEMA_VERSION,
    SHARD_SUFFIX,
)

CHUNK_SIZE = 128  # Source items per worker task.
# An input where this share of at least MIN_ENTRIES_CHECKED entries does not parse is refused.
MAX_PARSE_FAILURES = 0.9
MIN_ENTRIES_CHECKED = 10
PARSE_FAILURES = (
    "invalid_smiles",
    "valence_error",
    "kekulize_error",
    "sanitize_error",
    "sdf_parse_error",
    "invalid_molecule",
)
CONFORMER_MODES = ("rdkit", "none", "file")
_TMP_PREFIX = ".tmp-"


def shard_name(index: int, num_shards: int) -> str:
    return f"shard-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


# ---------------------------------------------------------------- per-item work (in workers)
def item_to_record(item: SourceItem, conformers: str, max_atoms: int, seed: int = 0):
    """One source item -> (record with `via` instead of `path_bonds`, conformer reason);
    raises SkipMolecule(reason)."""
    from rdkit import Chem

    from moleblend_jax.chem import qm9
    from moleblend_jax.chem.records import SkipMolecule, build_record, parse_smiles

    if item.skip_reason:
        raise SkipMolecule(item.skip_reason)
    if item.mol_block:
        mol = Chem.MolFromMolBlock(item.mol_block, removeHs=True)
        if mol is None:
            raise SkipMolecule("sdf_parse_error")
        coords = None if conformers == "file" else conformers  # None: the block's conformer.
    else:
        mol = parse_smiles(item.smiles)
        coords = "none" if conformers == "file" else conformers
        if item.xyz and conformers == "file":
            if mol.GetNumAtoms() > max_atoms:
                raise SkipMolecule("too_many_atoms")
            try:
                coords = qm9.heavy_atom_coords(mol, item.elements, item.xyz)
            except ValueError as err:
                raise SkipMolecule("qm9_bad_xyz", str(err)) from None
    return build_record(
        mol, item.id, coords, item.labels, max_atoms, seed, via_only=True, name=item.name
    )


def process_chunk(items: list[SourceItem], conformers: str, max_atoms: int, seed: int) -> list:
    """Worker task: items -> [("ok", id, bytes, n_atoms, conformer) | ("skip", id, reason)]."""
    from moleblend_jax.chem.records import SkipMolecule

    out = []
    for item in items:
        try:
            record, conformer = item_to_record(item, conformers, max_atoms, seed)
            data = serialize.encode_record(record, record.pop("via"))
            out.append(("ok", item.id, data, len(record["atom_features"]), conformer))
        except SkipMolecule as skip:
            out.append(("skip", item.id, skip.reason))
        except Exception as err:  # noqa: BLE001 - RDKit can fail in many ways; count, go on.
            out.append(("skip", item.id, f"error_{type(err).__name__}"))
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
    chunks = iter(chunks)
    head = list(itertools.islice(chunks, 2))
    if workers <= 1 or len(head) < 2:  # One chunk: not worth starting processes.
        for chunk in itertools.chain(head, chunks):
            yield fn(chunk, *args)
        return
    # forkserver: safe when the caller already runs threads (jax, TF); workers import only
    # numpy/RDKit.
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(workers) as pool:
        pending = collections.deque()
        for chunk in itertools.chain(head, chunks):
            pending.append(pool.apply_async(fn, (chunk, *args)))
            if len(pending) >= 4 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def featurize_items(
    items,
    conformers: str,
    max_atoms: int,
    seed: int = 0,
    workers: int = 2,
    limit: int | None = None,
    offset: int = 0,
):
    """Source items -> `process_chunk` results, one list per chunk of `CHUNK_SIZE` items, in
    source order, computed by `workers` processes (the shard writer's and inference's one
    featurisation)."""
    chunks = _chunks(items, CHUNK_SIZE, limit, offset)
    yield from _ordered_map(process_chunk, chunks, workers, (conformers, max_atoms, seed))


# ---------------------------------------------------------------- build
def _clean(output: epath.Path) -> None:
    for pattern in (_TMP_PREFIX + "*", "shard-*" + SHARD_SUFFIX):
        for path in output.glob(pattern):
            path.unlink()


def read_metadata(data_dir: str | os.PathLike) -> dict | None:
    """metadata.json of a shard directory, or None when it is missing or corrupt (the build
    did not finish: rebuild)."""
    path = epath.Path(data_dir) / METADATA_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def build_shards(
    input: str | Source,  # noqa: A002 - the CLI flag's name.
    output: str | os.PathLike,
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
    skip_bad_labels: bool = False,
) -> dict:
    """Reads `input`, writes OUTPUT/shard-*.tfrecord + metadata.json (local or gs:// paths).

    input: a file path, `qm9`, or a `sources.Source` (e.g. `sources.table_source`, the
    fine-tuning data sets). conformers: 'file' (coordinates from the source: SDF / QM9 DFT;
    SMILES sources get none), 'rdkit' (ETKDG + MMFF for every molecule) or 'none'
    (has_coords = 0); default: 'file' for sources with coordinates, else 'rdkit'. offset,
    limit: only source entries offset .. offset + limit - 1 (limit None: to the end), e.g. a
    held-out set after a training prefix. skip_bad_labels: CSV rows whose named label cell is
    not a number are skipped as `bad_label` (default: a UserError naming them). Returns the
    metadata dict. Raises FileNotFoundError / ValueError for a missing or empty input and
    ValueError when no molecule could be written.
    """
    if isinstance(input, Source):
        source = input
        where = dict(input=source.name, fingerprint=source.fingerprint)
    else:
        source = open_source(
            input, smiles_column, label_columns, labels_csv, skip_bad_labels=skip_bad_labels
        )
        where = dict(input=input if input == "qm9" else os.path.abspath(input))
    conformers = conformers or source.default_conformers
    if conformers not in CONFORMER_MODES:
        raise ValueError(f"conformers must be one of {CONFORMER_MODES}, got {conformers!r}")
    if not 1 <= max_atoms <= MAX_SUPPORTED_ATOMS:
        raise ValueError(f"max_atoms must be in [1, {MAX_SUPPORTED_ATOMS}], got {max_atoms}")
    if num_shards < 1:
        raise ValueError("num_shards must be >= 1")
    # Everything that determines the output bytes (not workers / progress). Keys absent at
    # their old value keep older builds valid; converted label units make older builds
    # (QM9 in Hartree) stale.
    label_units = source.notes.get("label_units")
    args = dict(
        **where,
        num_shards=num_shards,
        max_atoms=max_atoms,
        conformers=conformers,
        limit=limit,
        **({"offset": offset} if offset else {}),
        smiles_column=smiles_column,
        label_columns=label_columns,
        labels_csv=labels_csv,
        seed=seed,
        **({"label_units": label_units} if label_units else {}),
        **({"skip_bad_labels": True} if skip_bad_labels else {}),
    )
    output = epath.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    existing = read_metadata(output)
    if existing is not None and existing.get("args") == args and _shards_intact(output, existing):
        return existing
    # Drop the old metadata first: from here on the directory does not look complete.
    (output / METADATA_FILE).unlink(missing_ok=True)
    _clean(output)

    writer = _ShardWriter(output, num_shards)
    total = None if source.total is None else max(source.total - offset, 0)  # Progress bar.
    if limit is not None:
        total = limit if total is None else min(limit, total)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="mol", desc=f"shards {output.name}")
    try:
        items = _read(source)
        for results in featurize_items(items, conformers, max_atoms, seed, workers, limit, offset):
            for result in results:
                writer.add(result)
            if bar is not None:
                bar.update(len(results))
        writer.close()
        _require_mostly_parsed(source.name, writer.num_written, writer.skipped)
    except BaseException:
        writer.close(failed=True)  # Temporary shards would be taken for a build's output.
        _clean(output)
        raise
    finally:
        if bar is not None:
            bar.close()
    num_written, skipped, sizes = writer.num_written, writer.skipped, writer.sizes
    shards = writer.finish()
    histogram = collections.Counter()
    for counts in writer.atom_counts:
        histogram.update(counts)
    metadata = dict(
        schema_version=SCHEMA_VERSION,
        source=source.name,
        source_kind=source.kind,
        source_notes=source.notes,
        args=args,
        num_written=num_written,
        num_skipped=sum(skipped.values()),
        skipped=dict(sorted(skipped.items())),
        conformers=dict(sorted(writer.conformers.items())),
        label_names=source.label_names,
        num_labels=len(source.label_names),
        max_atoms_seen=max(histogram),
        atom_count_histogram={str(k): v for k, v in sorted(histogram.items())},
        total_bytes=sum(sizes),
        bytes_per_molecule=sum(sizes) / num_written,
        shards=shards,
    )
    tmp_meta = output / (_TMP_PREFIX + METADATA_FILE)
    try:
        _ShardWriter.guard(tmp_meta, lambda: tmp_meta.write_text(json.dumps(metadata, indent=1)))
    except UserError:
        _clean(output)
        raise
    tmp_meta.replace(output / METADATA_FILE)
    return metadata


class _ShardWriter:
    """Writes `process_chunk` results round-robin to temporary shard files, counting what it
    writes and skips; `finish` renames the shards into place. A failed write is a UserError
    naming the file and the OS error (a full disk)."""

    def __init__(self, output: epath.Path, num_shards: int):
        self.names = [shard_name(i, num_shards) for i in range(num_shards)]
        self.output = output
        self.paths = [output / (_TMP_PREFIX + n) for n in self.names]
        self.files = [self.guard(p, lambda p=p: p.open("wb")) for p in self.paths]
        self.hashes = [hashlib.sha256() for _ in self.names]
        self.atom_counts = [collections.Counter() for _ in self.names]
        self.skipped = collections.Counter()
        self.conformers = collections.Counter()
        self.num_written = 0

    @staticmethod
    def guard(path: epath.Path, write):
        """write() -> its result; an OSError becomes a UserError naming `path`."""
        try:
            return write()
        except OSError as err:
            raise UserError(f"{path}: writing shards failed: {err.strerror or err}") from None

    def add(self, result: tuple) -> None:
        if result[0] == "skip":
            self.skipped[result[2]] += 1
            return
        _, _, data, n_atoms, conformer = result
        shard = self.num_written % len(self.files)
        framed = serialize.frame(data)
        self.guard(self.paths[shard], lambda: self.files[shard].write(framed))
        self.hashes[shard].update(framed)
        self.atom_counts[shard][n_atoms] += 1
        self.conformers[conformer] += 1
        self.num_written += 1

    def close(self, failed: bool = False) -> None:
        """Flushes and closes every file (after a failure: quietly, as they are deleted)."""
        for path, f in zip(self.paths, self.files, strict=True):
            if failed:
                with contextlib.suppress(OSError):
                    f.close()
            else:
                self.guard(path, f.close)

    @property
    def sizes(self) -> list[int]:
        return [p.stat().length for p in self.paths]

    def finish(self) -> list[dict]:
        """Renames the closed shards into place -> their metadata.json entries."""
        shards = []
        for name, path, size, digest, counts in zip(
            self.names, self.paths, self.sizes, self.hashes, self.atom_counts, strict=True
        ):
            shards.append(
                dict(
                    file=name,
                    num_records=sum(counts.values()),
                    bytes=size,
                    sha256=digest.hexdigest(),
                    atom_counts={str(k): v for k, v in sorted(counts.items())},
                )
            )
            path.replace(self.output / name)
        return shards


def _read(source: Source):
    """`source.items()`, with a truncated or corrupt (gzip) file a UserError naming it."""
    try:
        yield from source.items()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise UserError(f"{source.name}: truncated or corrupt file ({err})") from None


def _require_mostly_parsed(name: str, num_written: int, skipped: collections.Counter) -> None:
    """No molecule written: ValueError; nearly every entry unparseable (the wrong format, a
    binary file): UserError naming the reasons."""
    if num_written == 0:
        raise ValueError(f"{name}: no molecule could be read (skipped: {dict(skipped)})")
    failed = sum(c for reason, c in skipped.items() if _is_parse_failure(reason))
    entries = num_written + sum(skipped.values())
    if entries >= MIN_ENTRIES_CHECKED and failed >= MAX_PARSE_FAILURES * entries:
        raise UserError(
            f"{name}: {failed} of {entries} entries could not be parsed "
            f"({dict(sorted(skipped.items()))}); is it the format its name says?"
        )


def _is_parse_failure(reason: str) -> bool:
    return reason in PARSE_FAILURES or reason.startswith("error_")


def _shards_intact(output: epath.Path, metadata: dict) -> bool:
    """Every shard of `metadata` present with its recorded size and sha256."""
    return all(_shard_intact(output / s["file"], s) for s in metadata.get("shards", []))


def _shard_intact(path: epath.Path, shard: dict) -> bool:
    if not path.exists() or path.stat().length != shard["bytes"]:
        return False
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest() == shard["sha256"]
