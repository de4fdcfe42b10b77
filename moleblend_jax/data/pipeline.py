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
from moleblend_jax.schema import (  # noqa: E402
    MAX_PATH_HOPS,
    NUM_ATOM_FEATURES,
    NUM_BOND_FEATURES,
    UNREACHABLE_SPD,
)

# The pipeline runs on CPU only; the accelerators belong to jax.
tf.config.set_visible_devices([], "GPU")
tf.get_logger().setLevel("ERROR")

_CHUNK = 1024  # Records bucketed together (one parse of their atom counts).

_shl, _shr = tf.bitwise.left_shift, tf.bitwise.right_shift


@tf.function(jit_compile=True)
def _pad_graphs(atoms, spd, via, ends, feats, n, n_bonds):
    """Graph tensors of one batch, compiled by XLA (one fused program per bucket shape).

    atoms [B, N, 9] uint8 raw ids; spd, via [B, N * N] uint8 flat [n_i, n_i] blobs (stored
    hops, Floyd-Warshall intermediate atom; chem.paths); ends [B, E, 2], feats [B, E, 3] uint8
    raw ids (rows past n_bonds [B] ignored); n [B] atom counts (0 for filler molecules). Returns
    atom_features [B, N, 9], atom_mask [B, N], spd [B, N, N] and path_edges [B, N, N, 5, 3]
    (int32 ids + 1).
    """
    b, size, num_bonds = tf.shape(atoms)[0], tf.shape(atoms)[1], tf.shape(ends)[1]
    atom = tf.range(size)
    atom_mask = atom[None] < n[:, None]
    pair_mask = atom_mask[:, :, None] & atom_mask[:, None, :]
    # Both [n_i, n_i] blobs re-laid out to [N, N] by one gather (hops | via << 8).
    pairs = tf.cast(spd, tf.int32) | _shl(tf.cast(via, tf.int32), 8)
    pairs = tf.gather(pairs, atom[:, None] * n[:, None, None] + atom, batch_dims=1)
    pairs = tf.where(pair_mask, pairs, 0)
    hops, via = pairs & 255, _shr(pairs, 8)

    # SPEC 1: stored hops (off-diagonal 0 = unreachable) -> hops + 1, unreachable 511.
    unreachable = pair_mask & (hops == 0) & (atom[:, None] != atom)
    spd = tf.where(unreachable, UNREACHABLE_SPD + 1, tf.where(pair_mask, hops + 1, 0))
    hops = tf.where(unreachable, 0, hops)

    # bond_code [B, N, N]: bond-feature ids + 1 of each bonded pair, one byte per feature.
    feats = tf.cast(feats, tf.int32) + 1
    code = feats[..., 0] | _shl(feats[..., 1], 8) | _shl(feats[..., 2], 16)
    ends = tf.cast(ends, tf.int32)
    first = tf.range(b)[:, None] * size * size
    index = tf.concat(
        [first + ends[..., 0] * size + ends[..., 1], first + ends[..., 1] * size + ends[..., 0]],
        axis=1,
    )
    real = tf.range(num_bonds)[None] < n_bonds[:, None]
    index = tf.where(tf.concat([real, real], 1), index, b * size * size)  # Padding: extra slot.
    bond_code = tf.scatter_nd(
        tf.reshape(index, [-1, 1]),
        tf.reshape(tf.concat([code, code], 1), [-1]),
        [b * size * size + 1],
    )
    bond_code = tf.reshape(bond_code[:-1], [b, size, size])

    codes = _path_bond_codes(hops, via, bond_code)  # [B, N, N, 5]
    path_edges = _shr(codes[..., None], tf.constant([0, 8, 16])) & 255
    atom_features = tf.where(atom_mask[..., None], tf.cast(atoms, tf.int32) + 1, 0)
    return atom_features, atom_mask, spd, path_edges


def _path_bond_codes(hops, via, bond_code):
    """[B, N, N] hops, via, bond codes -> [B, N, N, 5] codes of the path bonds, 0 past the path.

    The pointer doubling of `moleblend_jax.chem.paths.path_bonds_from_via` on the whole batch:
    state (b, i, j, t) points to (b, i, via, t) or (b, via, j, t - hops[b, i, via]) until a
    bonded pair's first bond or the end of the path.
    """
    b, size = tf.shape(hops)[0], tf.shape(hops)[1]
    atom = tf.range(size)
    step = tf.range(MAX_PATH_HOPS)
    first = tf.gather(hops, via, batch_dims=2)[..., None]  # Hops of the part i -> via.
    batch = tf.range(b)[:, None, None, None] * size
    via = via[..., None]
    left = ((batch + atom[:, None, None]) * size + via) * MAX_PATH_HOPS + step
    right = ((batch + via) * size + atom[:, None]) * MAX_PATH_HOPS + step - first
    state = tf.reshape(tf.range(b * size * size * MAX_PATH_HOPS), tf.shape(left))
    done = (step >= hops[..., None]) | (hops[..., None] == 1)
    pointer = tf.reshape(tf.where(done, state, tf.where(step < first, left, right)), [-1])
    _, pointer = tf.while_loop(
        lambda span, _: span < tf.reduce_max(hops) - 1,
        lambda span, pointer: (2 * span, tf.gather(pointer, pointer)),
        (tf.constant(1), pointer),
    )
    answer = tf.where(step < hops[..., None], bond_code[..., None], 0)
    return tf.reshape(tf.gather(tf.reshape(answer, [-1]), pointer), tf.shape(left))


class BatchDecoder:
    """Serialized records of one batch -> padded batch tensors (docs/batch_format.md).

    Empty strings decode as filler molecules (all padding, id -1, no labels).
    """

    def __init__(self, num_labels: int):
        self.num_labels = num_labels
        self.spec = {
            k: tf.io.FixedLenFeature([], tf.int64, default_value=-1 if k == "id" else 0)
            for k in ("id", "n_atoms", "n_bonds", "has_coords")
        }
        for k in ("atom_features", "bond_features", "bond_atoms", "spd", "via", "coords"):
            self.spec[k] = tf.io.FixedLenFeature([], tf.string, default_value="")
        if num_labels:
            missing = np.full(num_labels, np.nan, "<f4").tobytes()
            self.spec["labels"] = tf.io.FixedLenFeature([], tf.string, default_value=missing)

    def __call__(self, raw: tf.Tensor, size: tf.Tensor) -> dict:
        """raw [B] serialized records or "", size = bucket atom count N."""
        f = tf.io.parse_example(raw, self.spec)
        b = tf.shape(raw)[0]
        size = tf.cast(size, tf.int32)
        n_bonds = tf.cast(f["n_bonds"], tf.int32)
        # Bonds padded to a multiple of N: each bucket compiles once or twice.
        bonds = (tf.reduce_max(tf.concat([n_bonds, [1]], 0)) + size - 1) // size * size

        def dense(key, dtype, *shape):
            """[B] blobs -> [B, *shape] values, zero beyond each blob."""
            length = tf.reduce_prod(shape) * dtype.size
            return tf.reshape(tf.io.decode_raw(f[key], dtype, fixed_length=length), [b, *shape])

        atom_features, atom_mask, spd, path_edges = _pad_graphs(
            dense("atom_features", tf.uint8, size, NUM_ATOM_FEATURES),
            dense("spd", tf.uint8, size * size),
            dense("via", tf.uint8, size * size),
            dense("bond_atoms", tf.uint8, bonds, 2),
            dense("bond_features", tf.uint8, bonds, NUM_BOND_FEATURES),
            tf.cast(f["n_atoms"], tf.int32),
            n_bonds,
        )
        out = dict(
            atom_features=atom_features,
            atom_mask=atom_mask,
            spd=spd,
            path_edges=path_edges,
            coords=dense("coords", tf.float32, size, 3),
            has_coords=f["has_coords"] > 0,
            mol_mask=f["n_atoms"] > 0,
            id=f["id"],
        )
        if self.num_labels:
            labels = dense("labels", tf.float32, self.num_labels)
            present = ~tf.math.is_nan(labels)
            out["labels"] = tf.where(present, labels, 0.0)
            out["label_mask"] = present
        return out


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
    decoder = BatchDecoder(int(metadata.get("num_labels", 0)))
    bucket_sizes = tf.constant(buckets, tf.int32)
    file_names = tf.constant(mine)

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
        chunks = records.batch(_CHUNK).map(lambda raw: (raw, False))
        end = tf.data.Dataset.from_tensors((tf.constant([], tf.string), True))
        pending = tuple(tf.constant([], tf.string) for _ in buckets)
        batches = chunks.concatenate(end).scan(pending, group).unbatch()
        skip = tf.where(index == first_epoch, skip_in_epoch, 0)
        return batches.skip(tf.cast(skip, tf.int64))

    last = None if repeat else first_epoch + 1
    epochs = tf.data.Dataset.range(
        first_epoch, last if last is not None else np.iinfo(np.int64).max
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
        batches_per_epoch=per_epoch,
        num_oversize=num_oversize,
        bucket_counts=dict(zip(buckets, counts.tolist(), strict=True)),
        files=mine,
    )
