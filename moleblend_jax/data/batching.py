"""Numpy reference padding: records -> one padded batch of docs/batch_format.md.

The tf.data pipeline (`moleblend_jax.data.pipeline`) builds the same batches with vectorised TF
ops; tests check the two agree exactly. Use this for small in-memory sets and for tests.
"""

from __future__ import annotations

import numpy as np

from moleblend_jax.schema import (
    MAX_PATH_HOPS,
    NUM_ATOM_FEATURES,
    NUM_BOND_FEATURES,
    UNREACHABLE_SPD,
)

# The batch entries the model reads (the rest, such as ids and labels, stay on the host).
MODEL_INPUTS = ("atom_features", "atom_mask", "spd", "path_edges", "coords", "has_coords")


def model_inputs(batch: dict) -> dict:
    """A padded batch -> only its `MODEL_INPUTS` entries."""
    return {key: batch[key] for key in MODEL_INPUTS}


def pad_batch(records: list[dict], num_atoms: int, batch_size: int | None = None) -> dict:
    """Pads records (docs/batch_format.md) to N = num_atoms atoms and B = batch_size molecules.

    Returns atom_features [B, N, 9] int32 (ids + 1), atom_mask [B, N] bool, spd [B, N, N] int32
    (hops + 1, 0 at padding), path_edges [B, N, N, 5, 3] int32 (bond ids + 1), coords [B, N, 3]
    float32, has_coords [B] bool, mol_mask [B] bool, id [B] int64 (-1 filler) and, when the
    records carry labels, labels [B, T] float32 (0 where missing) and label_mask [B, T] bool.
    Filler molecules (beyond len(records)) are all padding. Raises ValueError when a molecule
    has more than num_atoms atoms or batch_size < len(records).
    """
    b = len(records) if batch_size is None else int(batch_size)
    n = int(num_atoms)
    if b < len(records):
        raise ValueError(f"batch_size {b} < {len(records)} records")
    batch = dict(
        atom_features=np.zeros((b, n, NUM_ATOM_FEATURES), np.int32),
        atom_mask=np.zeros((b, n), bool),
        spd=np.zeros((b, n, n), np.int32),
        path_edges=np.zeros((b, n, n, MAX_PATH_HOPS, NUM_BOND_FEATURES), np.int32),
        coords=np.zeros((b, n, 3), np.float32),
        has_coords=np.zeros((b,), bool),
        mol_mask=np.zeros((b,), bool),
        id=np.full((b,), -1, np.int64),
    )
    with_labels = bool(records) and "labels" in records[0]
    if with_labels:
        t = len(records[0]["labels"])
        batch["labels"] = np.zeros((b, t), np.float32)
        batch["label_mask"] = np.zeros((b, t), bool)
    for i, rec in enumerate(records):
        m = len(rec["atom_features"])
        if m > n:
            raise ValueError(f"molecule {rec['id']} has {m} atoms > bucket size {n}")
        batch["atom_features"][i, :m] = rec["atom_features"] + 1
        batch["atom_mask"][i, :m] = True
        # SPEC 1: shift hops by one so 0 is padding (self = 1, unreachable = 511).
        batch["spd"][i, :m, :m] = rec["spd"] + 1
        path = rec["path_bonds"]
        # Bond ids + 1 with a zero row for "no bond" at index 0 (path -1 -> row 0).
        table = np.concatenate(
            [np.zeros((1, NUM_BOND_FEATURES), np.int32), np.asarray(rec["bond_features"]) + 1]
        )
        batch["path_edges"][i, :m, :m] = table[path + 1]
        batch["coords"][i, :m] = rec["coords"]
        batch["has_coords"][i] = bool(rec["has_coords"])
        batch["mol_mask"][i] = True
        batch["id"][i] = rec["id"]
        if with_labels:
            labels = np.asarray(rec["labels"], np.float32)
            present = ~np.isnan(labels)
            batch["labels"][i] = np.where(present, labels, 0.0)
            batch["label_mask"][i] = present
    assert UNREACHABLE_SPD + 1 == 511  # The shifted unreachable id the model embeds.
    return batch


def bucket_batches(
    records: list[dict], batch_size: int, buckets, rng: np.random.Generator | None = None
) -> list[dict]:
    """In-memory records -> padded batches (`pad_batch`), each of one bucket: a record goes to
    the smallest bucket >= its atom count. With `rng`, records and batches are shuffled;
    without, batches come in bucket order and records in their order. Each bucket's last batch
    is filled up with filler molecules. Raises ValueError for a record larger than every bucket.
    """
    buckets = tuple(buckets)
    order = np.arange(len(records)) if rng is None else rng.permutation(len(records))
    by_bucket = {b: [] for b in buckets}
    for i in order:
        n = len(records[i]["atom_features"])
        bucket = next((b for b in buckets if n <= b), None)
        if bucket is None:
            raise ValueError(f"molecule {records[i]['id']} has {n} atoms > buckets {buckets}")
        by_bucket[bucket].append(records[i])
    batches = [
        pad_batch(group[start : start + batch_size], bucket, batch_size)
        for bucket, group in by_bucket.items()
        for start in range(0, len(group), batch_size)
    ]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def map_batches(
    fn, records: list[dict], batch_size: int, buckets, progress: bool = False
) -> list[dict]:
    """Applies `fn` (padded batch -> dict of [B, ...] arrays) to `bucket_batches` of `records`
    (ids unique; every batch [batch_size, bucket], so a jitted `fn` compiles once per bucket)
    and returns one dict of per-molecule arrays per record, in the records' order."""
    position = {int(r["id"]): p for p, r in enumerate(records)}
    if len(position) != len(records):
        raise ValueError("map_batches needs records with unique ids")
    batches = bucket_batches(records, batch_size, buckets)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, unit="batch", desc="model")
    out: list[dict | None] = [None] * len(records)
    for batch in batches:
        result = {k: np.asarray(v) for k, v in fn(batch).items()}
        for row in np.flatnonzero(batch["mol_mask"]):
            out[position[int(batch["id"][row])]] = {k: v[row] for k, v in result.items()}
    return out
