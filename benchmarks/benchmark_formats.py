"""On-disk format A/B: our TFRecord shards + tf.data vs ArrayRecord + grain, same records.

  pip install -e '.[formats]'  # grain, array-record
  python benchmarks/benchmark_formats.py --out=benchmarks/formats.json [--molecules=20000]

Builds QM9 shards, copies every record (the same serialized bytes, the same shard of each
record) into ArrayRecord files, then measures, in molecules/s on this machine: the raw record
read (tf.data interleave over TFRecord; grain's global-shuffle random access over ArrayRecord),
and padded batches of 256 (`make_batches`; grain shuffle -> batch -> the same vectorised
decoder, `batch_decoder.BatchDecoder`, called on each batch), plus bytes per molecule of each.
"""

import argparse
import json
import os
import tempfile
import time

from moleblend_jax.data import build_shards, reader, serialize

BATCH = 256


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1)


def _timed(fn, repeats: int = 3) -> float:
    """Best of `repeats` wall-clock seconds of fn() (the machine is shared)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def write_array_records(paths: list[str], out_dir: str, options: str) -> list[str]:
    """Each TFRecord shard -> an ArrayRecord file of the same records; returns their paths."""
    from array_record.python.array_record_module import ArrayRecordWriter

    out = []
    for path in paths:
        target = os.path.join(out_dir, os.path.basename(path) + ".array_record")
        writer = ArrayRecordWriter(target, options)
        for data in serialize.read_frames(path):
            writer.write(data)
        writer.close()
        out.append(target)
    return out


def grain_batches(paths: list[str], decoder, seed: int, size: int):
    """grain: a global shuffle of record indices -> batches of indices -> one batched
    ArrayRecord read (`__getitems__`) -> the vectorised decoder, per batch."""
    import grain
    import tensorflow as tf

    source = grain.sources.ArrayRecordDataSource(paths)
    indices = grain.MapDataset.range(len(source)).shuffle(seed=seed)
    indices = indices.batch(BATCH, drop_remainder=True, batch_fn=list)
    return indices.map(lambda keys: decoder(tf.constant(source.__getitems__(keys)), size))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--molecules", type=int, default=20_000)
    args = parser.parse_args()
    import grain
    import tensorflow as tf

    from moleblend_jax.data.batch_decoder import BatchDecoder
    from moleblend_jax.data.pipeline import make_batches

    results = dict(molecules=args.molecules, batch=BATCH)
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir = os.path.join(tmp, "tfrecord")
        meta = build_shards("qm9", shard_dir, num_shards=16, limit=args.molecules, progress=False)
        count = meta["num_written"]
        paths = reader.shard_paths(shard_dir, meta)
        results["tfrecord_bytes_per_molecule"] = round(meta["bytes_per_molecule"], 1)
        # group_size:1 = one record per chunk, grain's setting for random access (the default
        # groups 65536 records, so every random read decodes a whole group).
        for name, options in (("default", ""), ("group1", "group_size:1")):
            ar_dir = os.path.join(tmp, name)
            os.makedirs(ar_dir)
            ar_paths = write_array_records(paths, ar_dir, options)
            size = sum(os.path.getsize(p) for p in ar_paths)
            results[f"array_record_{name}_bytes_per_molecule"] = round(size / count, 1)
        ar_paths = [os.path.join(tmp, "group1", os.path.basename(p)) for p in ar_paths]

        def tf_raw():
            files = tf.data.Dataset.from_tensor_slices(paths)
            records = files.interleave(tf.data.TFRecordDataset, cycle_length=8)
            return sum(1 for _ in records.batch(BATCH))

        def grain_raw():  # One random access per record, as MapDataset.source does.
            source = grain.sources.ArrayRecordDataSource(ar_paths)
            return sum(1 for _ in grain.MapDataset.source(source).shuffle(seed=0))

        def grain_raw_batched():  # Shuffled indices, one batched read per 256.
            source = grain.sources.ArrayRecordDataSource(ar_paths)
            indices = grain.MapDataset.range(len(source)).shuffle(seed=0)
            batches = indices.batch(BATCH, batch_fn=list).map(source.__getitems__)
            return sum(1 for _ in batches)

        results["raw_tfrecord_tf_data_mol_per_s"] = _rate(count, _timed(tf_raw))
        results["raw_array_record_grain_shuffled_mol_per_s"] = _rate(count, _timed(grain_raw))
        results["raw_array_record_grain_shuffled_batched_read_mol_per_s"] = _rate(
            count, _timed(grain_raw_batched)
        )

        # Padded batches after the first one (start-up and compilation excluded).
        num_batches = count // BATCH - 1
        molecules = num_batches * BATCH
        tf_iterator = make_batches(shard_dir, BATCH, (16, 32), seed=0)
        decoder = BatchDecoder(meta["num_labels"])
        grain_iterator = iter(grain_batches(ar_paths, decoder, seed=0, size=16).repeat())
        for name, iterator in (
            ("tfrecord_tf_data", tf_iterator),
            ("array_record_grain", grain_iterator),
        ):
            next(iterator)
            seconds = _timed(lambda it=iterator: [next(it) for _ in range(num_batches)])
            results[f"batches_{name}_mol_per_s"] = _rate(molecules, seconds)
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
