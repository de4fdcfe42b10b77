"""tf.data input pipeline: shards -> shuffled, bucketed, padded numpy batches.

Batches follow docs/batch_format.md and equal `moleblend_jax.data.pad_batch` on the same
molecules (tested). `make_batches` is three steps: plan (this process's shard files and, from
metadata.json, the batches of an epoch), read (one epoch's raw records: interleave, shuffle)
and batch (bucket by atom count, group raw records into batches, decode and pad whole
batches with `batch_decoder.BatchDecoder`) -> prefetch.

Epochs are self-contained (each has its own seed; partial batches are dropped or padded with
filler molecules at the epoch's end), so the number of batches per epoch is known from
metadata.json and `start_batch` skips whole epochs for free and the rest of an epoch on raw,
undecoded records.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from moleblend_jax.data import reader, serialize
from moleblend_jax.data.batch_decoder import BatchDecoder
from moleblend_jax.data.tf_cpu import tf

_CHUNK = 1024  # Records bucketed together (one parse of their atom counts).


class BatchIterator:
    """Iterator of numpy batches with the plan's bookkeeping.

    Attributes: batches_per_epoch, num_oversize (molecules per epoch larger than the largest
    bucket, skipped), bucket_counts (molecules per epoch per bucket), num_batches_yielded.
    """

    def __init__(self, dataset: tf.data.Dataset, start_batch: int, **info):
        self._iterator = dataset.as_numpy_iterator()
        self.num_batches_yielded = 0
        self.start_batch = start_batch
        self.__dict__.update(info)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        try:
            batch = next(self._iterator)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
            raise _name_corrupt_file(self.files, err) from err
        self.num_batches_yielded += 1
        return batch


def _name_corrupt_file(paths: list[str], err: Exception) -> Exception:
    """TF's read errors do not always name the file: find it by checking every checksum."""
    for path in paths:
        try:
            for _ in serialize.read_frames(path):
                pass
        except serialize.CorruptRecordError as corrupt:
            return corrupt
    return serialize.CorruptRecordError(f"corrupt input in one of {paths}: {err}")


def _epoch_plan(metadata: dict, files: set[str], buckets, batch_size: int, drop_remainder: bool):
    counts = np.zeros(len(buckets), np.int64)
    oversize = 0
    for shard in metadata["shards"]:
        if shard["file"] not in files:
            continue
        for n, c in shard["atom_counts"].items():
            slot = np.searchsorted(buckets, int(n))  # Smallest bucket >= n.
            if slot == len(buckets):
                oversize += c
            else:
                counts[slot] += c
    if drop_remainder:
        per_bucket = counts // batch_size
    else:
        per_bucket = -(-counts // batch_size)
    return counts, int(per_bucket.sum()), oversize


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """What one process reads and the batches an epoch holds, from metadata.json alone.

    files: this process's shard files; bucket_counts [K]: molecules per epoch per bucket;
    num_oversize: molecules per epoch larger than the largest bucket; first_epoch,
    skip_in_epoch: where batch `start_batch` is.
    """

    files: list[str]
    buckets: tuple[int, ...]
    num_labels: int
    bucket_counts: np.ndarray
    batches_per_epoch: int
    num_oversize: int
    first_epoch: int
    skip_in_epoch: int


def plan_batches(
    data_dir: str,
    batch_size: int,
    buckets,
    shard_index: int,
    num_shards_total: int,
    start_batch: int,
    repeat: bool,
    drop_remainder: bool,
    oversize: str,
) -> BatchPlan:
    """The plan of `make_batches` (its arguments); raises ValueError when it has no batch."""
    buckets = tuple(sorted(int(b) for b in buckets))
    metadata = reader.load_metadata(data_dir)
    paths = reader.shard_paths(data_dir, metadata)
    mine = paths[shard_index::num_shards_total]
    if not mine:
        raise ValueError(
            f"{data_dir}: {len(paths)} shard files, none for process {shard_index} of "
            f"{num_shards_total}; rebuild with more --num_shards"
        )
    names = {os.path.basename(p) for p in mine}
    counts, per_epoch, num_oversize = _epoch_plan(
        metadata, names, buckets, batch_size, drop_remainder
    )
    if num_oversize and oversize == "error":
        raise ValueError(f"{data_dir}: {num_oversize} molecules larger than bucket {buckets[-1]}")
    if per_epoch == 0:
        raise ValueError(f"{data_dir}: no full batch of {batch_size} in any bucket {buckets}")
    first_epoch, skip_in_epoch = divmod(int(start_batch), per_epoch)
    if not repeat and first_epoch > 0:
        first_epoch, skip_in_epoch = 0, per_epoch  # Past the end: empty iterator.
    return BatchPlan(
        files=mine,
        buckets=buckets,
        num_labels=int(metadata.get("num_labels", 0)),
        bucket_counts=counts,
        batches_per_epoch=per_epoch,
        num_oversize=num_oversize,
        first_epoch=first_epoch,
        skip_in_epoch=skip_in_epoch,
    )


def read_epoch(
    files: list[str], index: tf.Tensor, seed: int, shuffle: bool, shuffle_buffer: int
) -> tf.data.Dataset:
    """Raw serialized records of epoch `index` (int64 scalar) of `files`: files interleaved
    (in a seeded order per epoch when `shuffle`), then shuffled in a buffer."""
    epoch_seed = tf.cast(seed, tf.int64) * 1_000_003 + index
    file_names = tf.data.Dataset.from_tensor_slices(tf.constant(files))
    if shuffle:
        file_names = file_names.shuffle(len(files), seed=epoch_seed)
    records = file_names.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 8),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if shuffle:
        records = records.shuffle(shuffle_buffer, seed=epoch_seed + 1)
    return records


def batch_epoch(
    records: tf.data.Dataset, bucket_sizes: tf.Tensor, batch_size: int, drop_remainder: bool
) -> tf.data.Dataset:
    """One epoch's raw records -> (raw [batch_size] records of one bucket, its slot in
    `bucket_sizes` [K]); at the epoch's end each bucket's partial batch is dropped or filled
    up with "" (filler molecules)."""

    def group(pending, chunk):
        """Scan step: adds a chunk of raw records [c] to each bucket's pending records and
        returns its full batches [m, batch_size] with their bucket slots [m]; the epoch's
        end marker (last) also flushes partial batches, filled up with "" (filler molecules).
        """
        raw, last = chunk
        n = tf.io.parse_example(raw, {"n_atoms": tf.io.FixedLenFeature([], tf.int64)})["n_atoms"]
        slot = tf.searchsorted(bucket_sizes, tf.cast(n, tf.int32), side="left")  # Oversize: K.
        left, out, slots = [], [], []
        for k, waiting in enumerate(pending):
            records = tf.concat([waiting, tf.boolean_mask(raw, slot == k)], 0)
            full = tf.size(records) // batch_size
            rows = full
            if not drop_remainder:
                rows += tf.cast(last & (tf.size(records) > full * batch_size), tf.int32)
            fill = tf.fill([tf.maximum(rows * batch_size - tf.size(records), 0)], "")
            out.append(
                tf.reshape(tf.concat([records, fill], 0)[: rows * batch_size], [-1, batch_size])
            )
            slots.append(tf.fill([rows], k))
            left.append(records[full * batch_size :])
        return tuple(left), (tf.concat(out, 0), tf.concat(slots, 0))

    chunks = records.batch(_CHUNK).map(lambda raw: (raw, False))
    end = tf.data.Dataset.from_tensors((tf.constant([], tf.string), True))
    pending = tuple(tf.constant([], tf.string) for _ in range(bucket_sizes.shape[0]))
    return chunks.concatenate(end).scan(pending, group).unbatch()


def make_batches(
    data_dir: str,
    batch_size: int,
    buckets=(16, 32, 64, 128, 256),
    *,
    seed: int,
    shuffle: bool = True,
    repeat: bool = True,
    shard_index: int = 0,
    num_shards_total: int = 1,
    start_batch: int = 0,
    drop_remainder: bool | None = None,
    shuffle_buffer: int = 10_000,
    oversize: str = "skip",
) -> BatchIterator:
    """Padded numpy batches of a shard directory (docs/batch_format.md).

    buckets: padded atom counts; each molecule goes to the smallest bucket >= its atom count and
    every batch holds one bucket (`(N,)` = single bucket). Molecules larger than the largest
    bucket are skipped and counted (`oversize='skip'`, see `.num_oversize`) or raise
    (`oversize='error'`). shard_index / num_shards_total: this process reads shard files
    shard_index, shard_index + num_shards_total, ... (multi-host). drop_remainder (default: =
    repeat): drop each bucket's last partial batch of an epoch; otherwise it is padded to
    batch_size with filler molecules (mol_mask false). start_batch=k yields exactly the
    uninterrupted sequence from batch k on. Order is a function of (seed, files, arguments).
    """
    if drop_remainder is None:
        drop_remainder = repeat
    plan = plan_batches(
        data_dir,
        batch_size,
        buckets,
        shard_index,
        num_shards_total,
        start_batch,
        repeat,
        drop_remainder,
        oversize,
    )
    decoder = BatchDecoder(plan.num_labels)
    bucket_sizes = tf.constant(plan.buckets, tf.int32)

    def epoch(index):
        records = read_epoch(plan.files, index, seed, shuffle, shuffle_buffer)
        batches = batch_epoch(records, bucket_sizes, batch_size, drop_remainder)
        skip = tf.where(index == plan.first_epoch, plan.skip_in_epoch, 0)
        return batches.skip(tf.cast(skip, tf.int64))

    last = None if repeat else plan.first_epoch + 1
    epochs = tf.data.Dataset.range(
        plan.first_epoch, last if last is not None else np.iinfo(np.int64).max
    )
    dataset = epochs.flat_map(epoch)
    dataset = dataset.map(
        lambda raw, slot: decoder(raw, tf.gather(bucket_sizes, slot)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    options = tf.data.Options()
    options.deterministic = True
    options.threading.private_threadpool_size = max(2, os.cpu_count() or 2)
    dataset = dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
    return BatchIterator(
        dataset,
        start_batch,
        batches_per_epoch=plan.batches_per_epoch,
        num_oversize=plan.num_oversize,
        bucket_counts=dict(zip(plan.buckets, plan.bucket_counts.tolist(), strict=True)),
        files=plan.files,
    )
