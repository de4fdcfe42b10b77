"""The shard writer as an Apache Beam pipeline (`build_shards` with runner="beam").

The same records and shard files as the local writer, byte for byte, on any runner and worker
count: every step is keyed by position, never by arrival order.

  source -> chunks (chunk index c, CHUNK_SIZE items)   one reader, then Reshuffle (fan-out)
         -> process_chunk per chunk                      featurisation + conformers (the work)
         -> written records per chunk -> prefix sums     record k of the source order ...
         -> (k % S, (k, bytes)) -> GroupByKey            ... goes to shard k % S
         -> each shard sorted by k, written by one worker (ShardFile) -> its stats
  skipped reasons: a side output, counted (and Beam metrics `moleblend/skipped_<reason>`).

The launcher then renames the shards and writes metadata.json (`shards.build_shards`). Memory:
one chunk per featurisation call, one shard (its records' bytes) per writer call; choose
--num_shards so that a shard stays in the hundreds of MB. The source is read by one worker
(reading is ~10^3x faster than conformer generation), so its files must be readable there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions
from etils import epath

from moleblend_jax.data import featurize
from moleblend_jax.data.shard_file import ShardFile
from moleblend_jax.data.sources import Source

_SUMMARY = ".tmp-beam-summary.json"
_METRICS = "moleblend"


def direct_options(workers: int) -> list[str]:
    """Pipeline options of a local DirectRunner with `workers` processes."""
    quiet = "--default_sdk_harness_log_level=WARNING"  # Workers log every bundle at INFO.
    if workers <= 1:
        return ["--runner=DirectRunner", "--direct_running_mode=in_memory", quiet]
    return [
        "--runner=DirectRunner",
        "--direct_running_mode=multi_processing",
        f"--direct_num_workers={workers}",
        quiet,
    ]


def _read_chunks(_, source: Source, chunk_size: int, limit, offset) -> Iterator[tuple]:
    """-> (chunk index, [chunk_size] SourceItems) in source order (`featurize.source_chunks`)."""
    yield from enumerate(featurize.source_chunks(source.items(), chunk_size, limit, offset))


def _featurize(chunk: tuple, conformers: str, max_atoms: int, seed: int) -> tuple:
    """(c, items) -> (c, `featurize.process_chunk` results)."""
    index, items = chunk
    return index, featurize.process_chunk(items, conformers, max_atoms, seed)


def _num_written(chunk: tuple) -> tuple[int, int]:
    index, results = chunk
    return index, sum(result[0] == "ok" for result in results)


def _first_record(counts: Sequence[tuple[int, int]]) -> np.ndarray:
    """[(c, records written by chunk c)] -> [C] int64 source-order index of chunk c's first
    record."""
    written = np.zeros(len(counts), np.int64)
    for index, count in counts:
        written[index] = count
    return np.cumsum(written) - written


class _AssignShards(beam.DoFn):
    """(c, results) -> (shard, (k, bytes, n_atoms, conformer)) for record k; skip reasons to
    the `skipped` output."""

    def __init__(self, num_shards: int):
        self.num_shards = num_shards

    def process(self, chunk: tuple, first_record: np.ndarray):
        index, results = chunk
        k = int(first_record[index])
        for result in results:
            if result[0] == "skip":
                beam.metrics.Metrics.counter(_METRICS, f"skipped_{result[2]}").inc()
                yield beam.pvalue.TaggedOutput("skipped", result[2])
                continue
            _, _, data, n_atoms, conformer = result
            yield k % self.num_shards, (k, data, n_atoms, conformer)
            k += 1
        beam.metrics.Metrics.counter(_METRICS, "molecules").inc(len(results))


def _write_shard(group: tuple, tmp_paths: Sequence[str]) -> tuple[int, dict]:
    """(shard s, its records and a None marker) -> (s, `ShardFile.close` stats)."""
    shard, values = group
    writer = ShardFile(epath.Path(tmp_paths[shard]))
    for _, data, n_atoms, conformer in sorted(filter(None, values), key=lambda r: r[0]):
        writer.add(data, n_atoms, conformer)
    return shard, writer.close()


def _write_summary(_, path: str, stats: list, skipped: list) -> None:
    summary = dict(stats=[s for _, s in sorted(stats)], skipped=dict(skipped))
    epath.Path(path).write_text(json.dumps(summary))


def write_shards(
    source: Source,
    tmp_paths: Sequence[epath.Path],
    plan: dict,
    pipeline_options: Sequence[str] | PipelineOptions,
    chunk_size: int | None = None,
) -> tuple[list[dict], dict]:
    """Runs the pipeline: writes shard s to tmp_paths[s]; `plan` = `featurize_items`' keywords
    (conformers, max_atoms, seed, limit, offset). Returns (stats of each shard, skip counts by
    reason), as `shards._write_local` does. pipeline_options: flags or a PipelineOptions."""
    chunk_size = chunk_size or featurize.CHUNK_SIZE
    num_shards = len(tmp_paths)
    paths = [str(p) for p in tmp_paths]
    summary_path = str(epath.Path(tmp_paths[0]).parent / _SUMMARY)
    if not isinstance(pipeline_options, PipelineOptions):
        pipeline_options = PipelineOptions(list(pipeline_options))
    with beam.Pipeline(options=pipeline_options) as pipeline:
        featurized = (
            pipeline
            | "Start" >> beam.Create([None])
            | "Read"
            >> beam.FlatMap(_read_chunks, source, chunk_size, plan["limit"], plan["offset"])
            | "FanOut" >> beam.Reshuffle()
            | "Featurize"
            >> beam.Map(_featurize, plan["conformers"], plan["max_atoms"], plan["seed"])
        )
        first_record = (
            featurized
            | "Count" >> beam.Map(_num_written)
            | "Counts" >> beam.combiners.ToList()
            | "PrefixSums" >> beam.Map(_first_record)
        )
        assigned = featurized | "Assign" >> beam.ParDo(
            _AssignShards(num_shards), beam.pvalue.AsSingleton(first_record)
        ).with_outputs("skipped", main="records")
        # One None per shard, so that every shard is written, records or not.
        markers = pipeline | "Shards" >> beam.Create([(s, None) for s in range(num_shards)])
        stats = (
            (assigned.records, markers)
            | "Flatten" >> beam.Flatten()
            | "ByShard" >> beam.GroupByKey()
            | "Write" >> beam.Map(_write_shard, paths)
        )
        skipped = assigned.skipped | "CountSkips" >> beam.combiners.Count.PerElement()
        _ = (
            pipeline
            | "End" >> beam.Create([None])
            | "Summary"
            >> beam.Map(
                _write_summary,
                summary_path,
                beam.pvalue.AsList(stats),
                beam.pvalue.AsList(skipped),
            )
        )
    summary_file = epath.Path(summary_path)
    summary = json.loads(summary_file.read_text())
    summary_file.unlink()
    return summary["stats"], summary["skipped"]
