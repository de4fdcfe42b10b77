"""Build TFRecord shards from an input source (docs/data.md).

Determinism: the source is read in order in the parent, processed in fixed-size chunks by W
worker processes, and the results are written back in source order; the k-th written record
goes to shard k % num_shards. Output bytes therefore depend only on the input and the
arguments, never on W. `runner="beam"` runs the same per-item work as an Apache Beam pipeline
(`data.beam_shards`) and writes the same bytes. Atomicity: shards are written under temporary
names and renamed at the end, and metadata.json is written last (also via rename); a directory
without metadata.json is incomplete, and rerunning rebuilds it. Rerunning a completed build
with the same arguments is a no-op once every shard's size and sha256 match metadata.json (a
damaged shard is rebuilt). A failed build (a full disk, a truncated input) leaves no temporary
files and says which file failed.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import json
import os
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from etils import epath

from moleblend_jax import atomic
from moleblend_jax.data.featurize import featurize_items
from moleblend_jax.data.public_sets import BUNDLED_SOURCES
from moleblend_jax.data.reader import read_metadata
from moleblend_jax.data.shard_file import ShardFile, guard, shard_name
from moleblend_jax.data.sources import FileInput, Source
from moleblend_jax.errors import NoMoleculesError, UserError
from moleblend_jax.schema import (
    CONFORMER_MODES,
    MAX_SUPPORTED_ATOMS,
    METADATA_FILE,
    SCHEMA_VERSION,
    SHARD_SUFFIX,
)

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

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
    "empty_smiles",  # A CSV row without a molecule is no more usable than one that fails.
)
_TMP_PREFIX = ".tmp-"


def _read(source: Source):
    """`source.items()`, with a truncated or corrupt (gzip) file a UserError naming it."""
    try:
        yield from source.items()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise UserError(f"{source.name}: truncated or corrupt file ({err})") from None


def _write_local(source: Source, tmp_paths, plan: dict, workers: int, bar) -> tuple:
    """The multiprocessing writer: featurises in `workers` processes, writes record k of the
    source order to shard k % S. Returns (stats of each shard, skip counts by reason)."""
    files = [ShardFile(p) for p in tmp_paths]
    skipped = collections.Counter()
    num_written = 0
    try:
        chunks = featurize_items(_read(source), workers=workers, **plan)
        for results in chunks:
            for result in results:
                if result[0] == "skip":
                    skipped[result[2]] += 1
                    continue
                _, _, data, n_atoms, conformer = result
                files[num_written % len(files)].add(data, n_atoms, conformer)
                num_written += 1
            if bar is not None:
                bar.update(len(results))
    except BaseException:
        for f in files:
            f.abort()
        raise
    return [f.close() for f in files], skipped


# ---------------------------------------------------------------- build
def _clean(output: epath.Path) -> None:
    for pattern in (_TMP_PREFIX + "*", "shard-*" + SHARD_SUFFIX):
        for path in output.glob(pattern):
            path.unlink()


RUNNERS = ("local", "beam")


@dataclasses.dataclass(frozen=True)
class ShardOptions:
    """How `build_shards` writes. num_shards .. seed decide the bytes (metadata.json "args");
    workers, progress, runner and pipeline_options only how the work runs (both runners write
    the same bytes).

    conformers: 'file' (coordinates from the source: SDF / QM9 DFT; SMILES sources get none),
    'rdkit' (ETKDG + MMFF for every molecule) or 'none' (has_coords = 0); None: 'file' for
    sources with coordinates, else 'rdkit'. offset, limit: only source entries offset ..
    offset + limit - 1 (limit None: to the end), e.g. a held-out set after a training prefix.
    runner: 'local' (a `workers`-process pool) or 'beam' (an Apache Beam pipeline,
    `data.beam_shards`; `pipeline_options`: flags such as ["--runner=DataflowRunner", ...] or
    a PipelineOptions, default a multi-process DirectRunner of `workers` processes).
    """

    num_shards: int = 16
    max_atoms: int = MAX_SUPPORTED_ATOMS
    conformers: str | None = None
    limit: int | None = None
    offset: int = 0
    seed: int = 0
    workers: int = 2
    progress: bool = True
    runner: str = "local"
    pipeline_options: Sequence[str] | PipelineOptions | None = None

    def check(self) -> None:
        if self.runner not in RUNNERS:
            raise ValueError(f"runner must be one of {RUNNERS}, got {self.runner!r}")
        if not 1 <= self.max_atoms <= MAX_SUPPORTED_ATOMS:
            raise ValueError(
                f"max_atoms must be in [1, {MAX_SUPPORTED_ATOMS}], got {self.max_atoms}"
            )
        if self.num_shards < 1:
            raise ValueError("num_shards must be >= 1")


def build_shards(
    input: str | FileInput | Source,  # noqa: A002 - the CLI flag's name.
    output: str | os.PathLike,
    options: ShardOptions | None = None,
    **option_changes,
) -> dict:
    """Reads `input`, writes OUTPUT/shard-*.tfrecord + metadata.json (local or gs:// paths).

    input: a file path or `qm9` / `moses` (bundled), a `sources.FileInput` (a path and how to
    read it: CSV columns, labels), or a `sources.Source` (e.g. `sources.table_source`, the
    fine-tuning data sets). options: a `ShardOptions`, with `option_changes` (its fields)
    replaced. A build whose recorded args and shard checksums match is reused as is. Returns
    the metadata dict. Raises FileNotFoundError / ValueError for a missing or empty input and
    NoMoleculesError when no molecule could be written.
    """
    options = dataclasses.replace(options or ShardOptions(), **option_changes)
    options.check()
    source, where, reading = _open(input)
    conformers = options.conformers or source.default_conformers
    if conformers not in CONFORMER_MODES:
        raise ValueError(f"conformers must be one of {CONFORMER_MODES}, got {conformers!r}")
    # Everything that determines the output bytes (not workers / runner / progress). Keys
    # absent at their old value keep older builds valid; converted label units make older
    # builds (QM9 in Hartree) stale.
    label_units = source.notes.get("label_units")
    args = dict(
        **where,
        num_shards=options.num_shards,
        max_atoms=options.max_atoms,
        conformers=conformers,
        limit=options.limit,
        **({"offset": options.offset} if options.offset else {}),
        smiles_column=reading.smiles_column,
        label_columns=reading.label_columns,
        labels_csv=reading.labels_csv,
        seed=options.seed,
        **({"label_units": label_units} if label_units else {}),
        **({"skip_bad_labels": True} if reading.skip_bad_labels else {}),
    )
    output = epath.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    existing = read_metadata(output)
    if existing is not None and existing.get("args") == args and _shards_intact(output, existing):
        return existing
    # Drop the old metadata first: from here on the directory does not look complete.
    (output / METADATA_FILE).unlink(missing_ok=True)
    _clean(output)

    names = [shard_name(i, options.num_shards) for i in range(options.num_shards)]
    tmp_paths = [output / (_TMP_PREFIX + n) for n in names]
    # What the featurisation depends on (`featurize_items`' keywords).
    plan = dict(
        conformers=conformers,
        max_atoms=options.max_atoms,
        seed=options.seed,
        limit=options.limit,
        offset=options.offset,
    )
    try:
        stats, skipped = _write(source, tmp_paths, plan, options)
        num_written = sum(s["num_records"] for s in stats)
        _require_mostly_parsed(source.name, num_written, skipped)
        metadata = _metadata(source, args, names, stats, skipped)
        tmp_meta = output / (_TMP_PREFIX + METADATA_FILE)
        guard(tmp_meta, lambda: tmp_meta.write_text(json.dumps(metadata, indent=1)))
    except BaseException:
        _clean(output)  # Temporary shards would be taken for a build's output.
        raise
    for name, tmp in zip(names, tmp_paths, strict=True):
        tmp.replace(output / name)
    tmp_meta.replace(output / METADATA_FILE)
    return metadata


def _open(input: str | FileInput | Source) -> tuple[Source, dict, FileInput]:  # noqa: A002
    """-> (the source, where it is as metadata.json records it, how a file was read)."""
    if isinstance(input, Source):
        return input, dict(input=input.name, fingerprint=input.fingerprint), FileInput("")
    reading = input if isinstance(input, FileInput) else FileInput(input)
    path = reading.path
    where = dict(input=path if path in BUNDLED_SOURCES else os.path.abspath(path))
    return reading.open(), where, reading


def _write(source: Source, tmp_paths, plan: dict, options: ShardOptions) -> tuple:
    """Featurises and writes the temporary shards with `options.runner` -> (stats of each
    shard, skip counts by reason)."""
    if options.runner == "beam":
        from moleblend_jax.data import beam_shards

        beam_options = options.pipeline_options or beam_shards.direct_options(options.workers)
        return beam_shards.write_shards(source, tmp_paths, plan, beam_options)
    total = None if source.total is None else max(source.total - plan["offset"], 0)  # Progress.
    if plan["limit"] is not None:
        total = plan["limit"] if total is None else min(plan["limit"], total)
    bar = None
    if options.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="mol", desc=f"shards {tmp_paths[0].parent.name}")
    try:
        return _write_local(source, tmp_paths, plan, options.workers, bar)
    finally:
        if bar is not None:
            bar.close()


def _metadata(source: Source, args: dict, names: list[str], stats: list[dict], skipped) -> dict:
    """metadata.json (docs/data.md) of the shards `names` with stats from `ShardFile.close`."""
    num_written = sum(s["num_records"] for s in stats)
    histogram = collections.Counter()
    conformers = collections.Counter()
    for s in stats:
        histogram.update({int(k): v for k, v in s["atom_counts"].items()})
        conformers.update(s["conformers"])
    total_bytes = sum(s["bytes"] for s in stats)
    return dict(
        schema_version=SCHEMA_VERSION,
        source=source.name,
        source_kind=source.kind,
        source_notes=source.notes,
        args=args,
        num_written=num_written,
        num_skipped=sum(skipped.values()),
        skipped=dict(sorted(skipped.items())),
        conformers=dict(sorted(conformers.items())),
        label_names=source.label_names,
        num_labels=len(source.label_names),
        max_atoms_seen=max(histogram),
        atom_count_histogram={str(k): v for k, v in sorted(histogram.items())},
        total_bytes=total_bytes,
        bytes_per_molecule=total_bytes / num_written,
        shards=[
            dict(file=name, **{k: s[k] for k in ("num_records", "bytes", "sha256", "atom_counts")})
            for name, s in zip(names, stats, strict=True)
        ],
    )


def _require_mostly_parsed(name: str, num_written: int, skipped: collections.Counter) -> None:
    """No molecule written: ValueError; nearly every entry unparseable (the wrong format, a
    binary file): UserError naming the reasons."""
    if num_written == 0:
        raise NoMoleculesError(f"{name}: no molecule could be read (skipped: {dict(skipped)})")
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
    return atomic.file_sha256(path) == shard["sha256"]
