"""Serialized records of one batch -> padded batch tensors (docs/batch_format.md), in TF.

Vectorised decode and padding on whole batches, no per-molecule Python: the graph tensors of a
batch are re-laid out and their path bonds found by one XLA-compiled program per bucket shape.
Equal to `moleblend_jax.data.pad_batch` on the same molecules (tested).
"""

from __future__ import annotations

import numpy as np

from moleblend_jax.data.tf_cpu import tf
from moleblend_jax.schema import (
    MAX_PATH_HOPS,
    NUM_ATOM_FEATURES,
    NUM_BOND_FEATURES,
    UNREACHABLE_SPD,
)

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
