"""tf.data input pipeline: shards -> shuffled, bucketed, padded numpy batches.

Batches follow docs/batch_format.md and equal `moleblend_jax.data.pad_batch` on the same
molecules (tested). Stages: shard files (this process's subset) -> interleave -> shuffle ->
bucket by atom count -> group raw records into batches -> vectorised decode + padding on whole
batches (no per-molecule Python) -> prefetch.

Epochs are self-contained (each has its own seed; partial batches are dropped or padded with
filler molecules at the epoch's end), so the number of batches per epoch is known from
metadata.json and `start_batch` skips whole epochs for free and the rest of an epoch on raw,
undecoded records.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from moleblend_jax.data import reader, serialize  # noqa: E402
from moleblend_jax.data.schema import (  # noqa: E402
    MAX_PATH_HOPS,
    NUM_ATOM_FEATURES,
    NUM_BOND_FEATURES,
    UNREACHABLE_SPD,
)

# The pipeline runs on CPU only; the accelerators belong to jax.
tf.config.set_visible_devices([], "GPU")
tf.get_logger().setLevel("ERROR")

_KEY_BATCH = 1024  # Records parsed together to read their atom counts.


def _ragged(strings: tf.Tensor, dtype: tf.DType) -> tf.RaggedTensor:
    """[b] byte strings -> [b, (len)] ragged values, decoded in one op for the whole batch."""
    flat = tf.io.decode_raw(tf.strings.reduce_join(strings), dtype)
    lengths = tf.strings.length(strings) // dtype.size
    return tf.RaggedTensor.from_row_lengths(flat, tf.cast(lengths, tf.int64))


def _square(strings: tf.Tensor, n: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """[b] flat uint8 [n_i, n_i] blobs -> [b, size, size] int32 (0 outside [n_i, n_i])."""
    b = tf.shape(strings)[0]
    flat = _ragged(strings, tf.uint8).to_tensor()
    flat = tf.concat([tf.cast(flat, tf.int32), tf.zeros([b, 1], tf.int32)], axis=1)
    rows = tf.range(size)[None, :, None]
    cols = tf.range(size)[None, None, :]
    n = n[:, None, None]
    inside = (rows < n) & (cols < n)
    index = tf.where(inside, rows * n + cols, tf.shape(flat)[1] - 1)  # Last column is 0.
    # int64 indices: TF's CPU gather is several times slower with int32 ones.
    return tf.gather(flat, tf.cast(index, tf.int64), batch_dims=1)


@tf.function(jit_compile=True)
def _walk_paths(next_hop, hops, ends, feats, n_bonds):
    """Dense part of the path-edge decode, compiled by XLA (one fused kernel per bucket shape
    instead of ~40 small TF ops).

    next_hop, hops [b, N, N] int32; ends [b, E, 2], feats [b, E, 3] raw ids (padded rows
    beyond n_bonds [b]) -> [b, N, N, 5, 3] bond-feature ids + 1, 0 past each path.
    """
    b, size, num_bonds = tf.shape(hops)[0], tf.shape(hops)[1], tf.shape(ends)[1]
    # Row 0 of the table is "no bond" (all 0); bond k is row k + 1.
    table = tf.concat([tf.zeros([b, 1, NUM_BOND_FEATURES], tf.int32), feats + 1], axis=1)
    bond_ids = tf.broadcast_to(tf.range(1, num_bonds + 1)[None], [b, num_bonds])
    real = bond_ids <= n_bonds[:, None]
    # [b, N, N] 1-based bond index of each bonded pair, from a one-hot sum over bonds (padded
    # bonds contribute nothing).
    atoms = tf.range(size)
    one_u = tf.cast((ends[..., 0:1] == atoms) & real[..., None], tf.int32)  # [b, E, N]
    one_v = tf.cast((ends[..., 1:2] == atoms) & real[..., None], tf.int32)
    weighted = one_u * bond_ids[..., None]
    bond_index = tf.einsum("beu,bev->buv", weighted, one_v) + tf.einsum(
        "beu,bev->bvu", weighted, one_v
    )
    rows = tf.range(b)[:, None, None]
    target = tf.broadcast_to(atoms[None, None, :], [b, size, size])
    current = tf.broadcast_to(atoms[None, :, None], [b, size, size])
    batch = tf.broadcast_to(rows, [b, size, size])
    steps = []
    for k in range(MAX_PATH_HOPS):
        on_path = hops > k
        step = tf.gather_nd(next_hop, tf.stack([batch, current, target], -1))
        bond = tf.gather_nd(bond_index, tf.stack([batch, current, step], -1))
        bond = tf.where(on_path, bond, 0)
        steps.append(tf.gather(table, bond, batch_dims=1))  # [b, N, N, 3]
        current = tf.where(on_path, step, current)
    return tf.stack(steps, axis=3)


class BatchDecoder:
    """Raw serialized records of one batch -> padded batch tensors (docs/batch_format.md)."""

    def __init__(self, batch_size: int, num_labels: int):
        self.batch_size = batch_size
        self.num_labels = num_labels
        self.spec = {
            k: tf.io.FixedLenFeature([], tf.int64)
            for k in ("id", "n_atoms", "n_bonds", "has_coords")
        }
        for k in ("atom_features", "bond_features", "bond_atoms", "spd", "next_hop", "coords"):
            self.spec[k] = tf.io.FixedLenFeature([], tf.string)
        if num_labels:
            self.spec["labels"] = tf.io.FixedLenFeature([], tf.string)

    def __call__(self, raw: tf.Tensor, size: tf.Tensor) -> dict:
        """raw [b] serialized records (b <= batch_size), size = bucket atom count N."""
        f = tf.io.parse_example(raw, self.spec)
        b = tf.shape(raw)[0]
        size = tf.cast(size, tf.int32)
        n = tf.cast(f["n_atoms"], tf.int32)
        atom_mask = tf.range(size)[None, :] < n[:, None]  # [b, N]

        atoms = _ragged(f["atom_features"], tf.uint8).to_tensor(shape=[None, None])
        atoms = tf.pad(tf.cast(atoms, tf.int32), [[0, 0], [0, size * NUM_ATOM_FEATURES]])
        atoms = tf.reshape(atoms[:, : size * NUM_ATOM_FEATURES], [b, size, NUM_ATOM_FEATURES])
        atom_features = tf.where(atom_mask[..., None], atoms + 1, 0)

        coords = _ragged(f["coords"], tf.float32).to_tensor()
        coords = tf.pad(coords, [[0, 0], [0, size * 3]])
        coords = tf.reshape(coords[:, : size * 3], [b, size, 3])

        # SPEC 1: stored hops (off-diagonal 0 = unreachable) -> hops + 1, unreachable 511.
        stored = _square(f["spd"], n, size)
        pair_mask = atom_mask[:, :, None] & atom_mask[:, None, :]
        eye = tf.eye(size, dtype=tf.bool)[None]
        unreachable = pair_mask & ~eye & (stored == 0)
        spd = tf.where(unreachable, UNREACHABLE_SPD + 1, tf.where(pair_mask, stored + 1, 0))
        hops = tf.where(unreachable, 0, stored)

        path_edges = self._path_edges(f, n, size, hops, b)
        out = dict(
            atom_features=atom_features,
            atom_mask=atom_mask,
            spd=spd,
            path_edges=path_edges,
            coords=coords,
            has_coords=f["has_coords"] > 0,
            mol_mask=tf.ones([b], tf.bool),
            id=f["id"],
        )
        if self.num_labels:
            labels = tf.reshape(
                tf.io.decode_raw(tf.strings.reduce_join(f["labels"]), tf.float32),
                [b, self.num_labels],
            )
            present = ~tf.math.is_nan(labels)
            out["labels"] = tf.where(present, labels, 0.0)
            out["label_mask"] = present
        return self._fill(out, b)

    def _path_edges(self, f, n, size, hops, b) -> tf.Tensor:
        """[b, N, N, 5, 3] bond-feature ids + 1 along the stored shortest paths (SPEC 1)."""
        next_hop = _square(f["next_hop"], n, size)  # [b, N, N]
        ends = _ragged(f["bond_atoms"], tf.uint8).to_tensor()
        feats = _ragged(f["bond_features"], tf.uint8).to_tensor()
        n_bonds = tf.cast(f["n_bonds"], tf.int32)
        # Fixed shapes for XLA: batch padded to batch_size, bonds to a multiple of N, so each
        # bucket compiles once or twice.
        num_bonds = tf.reduce_max(tf.concat([n_bonds, [1]], 0))
        bonds_pad = (num_bonds + size - 1) // size * size
        missing = self.batch_size - b
        ends = tf.pad(ends, [[0, missing], [0, 2 * bonds_pad - tf.shape(ends)[1]]])
        feats = tf.pad(
            feats, [[0, missing], [0, NUM_BOND_FEATURES * bonds_pad - tf.shape(feats)[1]]]
        )
        edges = _walk_paths(
            tf.pad(next_hop, [[0, missing], [0, 0], [0, 0]]),
            tf.pad(hops, [[0, missing], [0, 0], [0, 0]]),
            tf.reshape(tf.cast(ends, tf.int32), [self.batch_size, -1, 2]),
            tf.reshape(tf.cast(feats, tf.int32), [self.batch_size, -1, NUM_BOND_FEATURES]),
            tf.pad(n_bonds, [[0, missing]]),
        )
        return edges[:b]

    def _fill(self, out: dict, b) -> dict:
        """Pads a partial batch to batch_size with filler molecules (all padding, id -1)."""
        missing = self.batch_size - b
        filled = {}
        for key, value in out.items():
            pad = [[0, missing]] + [[0, 0]] * (len(value.shape) - 1)
            constant = -1 if key == "id" else False if value.dtype == tf.bool else 0
            filled[key] = tf.pad(value, pad, constant_values=constant)
        return filled


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
    decoder = BatchDecoder(batch_size, int(metadata.get("num_labels", 0)))
    bucket_sizes = tf.constant(buckets, tf.int32)
    file_names = tf.constant(mine)

    def key_record(raw):
        n = tf.io.parse_example(raw, {"n_atoms": tf.io.FixedLenFeature([], tf.int64)})["n_atoms"]
        slot = tf.searchsorted(bucket_sizes, tf.cast(n, tf.int32), side="left")
        return raw, tf.cast(slot, tf.int64)

    def epoch(index):
        epoch_seed = tf.cast(seed, tf.int64) * 1_000_003 + index
        files = tf.data.Dataset.from_tensor_slices(file_names)
        if shuffle:
            files = files.shuffle(len(mine), seed=epoch_seed)
        records = files.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(len(mine), 8),
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        if shuffle:
            records = records.shuffle(shuffle_buffer, seed=epoch_seed + 1)
        keyed = records.batch(_KEY_BATCH).map(key_record).unbatch()
        keyed = keyed.filter(lambda raw, slot: slot < len(buckets))
        batches = keyed.group_by_window(
            key_func=lambda raw, slot: slot,
            reduce_func=lambda slot, window: window.batch(batch_size),
            window_size=batch_size,
        )
        if drop_remainder:
            batches = batches.filter(lambda raw, slot: tf.shape(raw)[0] == batch_size)
        skip = tf.where(index == first_epoch, skip_in_epoch, 0)
        return batches.skip(tf.cast(skip, tf.int64))

    last = None if repeat else first_epoch + 1
    epochs = tf.data.Dataset.range(
        first_epoch, last if last is not None else np.iinfo(np.int64).max
    )
    dataset = epochs.flat_map(epoch)
    dataset = dataset.map(
        lambda raw, slot: decoder(raw, tf.gather(bucket_sizes, slot[0])),
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
        batches_per_epoch=per_epoch,
        num_oversize=num_oversize,
        bucket_counts=dict(zip(buckets, counts.tolist(), strict=True)),
        files=mine,
    )
