"""Pretraining losses and metrics (SPEC 5), plain means over the valid items of the whole batch.

Every loss is a ratio of sums over the global batch (or, for the 3D direction loss, a mean over
real molecules of per-molecule means), so a batch sharded over devices gives the same number as
the unsharded one when computed under jit on global arrays.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from moleblend_jax import model as model_lib
from moleblend_jax.model.layers import safe_norm
from moleblend_jax.model.pallas_cross_entropy import FactoredLogits
from moleblend_jax.model.pallas_cross_entropy import cross_entropy as factored_cross_entropy
from moleblend_jax.schema import UNREACHABLE_SPD  # Raw hop value of disconnected pairs.

MAX_BOND_TYPE, MAX_STEREO, MAX_CONJUGATED = 4, 3, 2  # SPEC 5 edge-class ranges (24 classes).


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
    """[..., 3], [..., 3] -> [...] cosine; 0 where either vector is zero (finite gradients)."""
    denom = safe_norm(a) * safe_norm(b)
    dot = jnp.sum(a * b, axis=-1)
    return jnp.where(denom > 0, dot / jnp.where(denom > 0, denom, 1.0), 0.0)


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `values` over `mask` (same shape); 0 when the mask is empty."""
    mask = mask.astype(jnp.float32)
    return jnp.sum(values.astype(jnp.float32) * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def real_atoms(batch: Mapping) -> jax.Array:
    """[B, N] bool: real atoms of real (non-filler) molecules."""
    return batch["atom_mask"].astype(bool) & batch["mol_mask"].astype(bool)[:, None]


def atoms_with_coords(batch: Mapping) -> jax.Array:
    """[B, N] bool: real atoms of real molecules whose coordinates are real (`has_coords`)."""
    return real_atoms(batch) & model_lib.atoms_with_coords(batch)


def real_pairs(batch: Mapping) -> jax.Array:
    """[B, N, N] bool: ordered pairs i != j of real atoms of real molecules."""
    atoms = real_atoms(batch)
    n = atoms.shape[1]
    return atoms[:, :, None] & atoms[:, None, :] & ~jnp.eye(n, dtype=bool)


def reachable_pairs(batch: Mapping) -> jax.Array:
    """[B, N, N] bool: real non-self pairs joined by a path (SPEC 5 SPD/edge targets)."""
    spd = batch["spd"]
    return real_pairs(batch) & (spd >= 2) & (spd != UNREACHABLE_SPD + 1)


def cross_entropy(
    logits: jax.Array, labels: jax.Array, axis: int = -1
) -> tuple[jax.Array, jax.Array]:
    """[..., C] logits, [...] int labels -> ([...] fp32 negative log-likelihood, [...] bool
    whether the label has the largest logit, i.e. argmax == label barring exact ties).
    `axis` is the class axis of `logits`; `labels` has the shape of `logits` without it.

    The label logit is picked with a one-hot product (a gather here would scatter-add a dense
    zero tensor in the backward pass) and the accuracy reuses the softmax's max.
    """
    logits = logits.astype(jnp.float32)
    shifted = logits - jax.lax.stop_gradient(jnp.max(logits, axis=axis, keepdims=True))
    log_partition = jnp.log(jnp.sum(jnp.exp(shifted), axis=axis))
    one_hot = jax.nn.one_hot(labels, logits.shape[axis], dtype=jnp.float32, axis=axis)
    label_logit = jnp.sum(shifted * one_hot, axis=axis)
    return log_partition - label_logit, label_logit >= 0.0


def num_classes(logits: jax.Array | FactoredLogits) -> int:
    """The class count of a pair head's classes-last logits or FactoredLogits."""
    return logits.bias.shape[-1] if isinstance(logits, FactoredLogits) else logits.shape[-1]


def spd_targets(spd: jax.Array, num_classes: int) -> jax.Array:
    """[B, N, N] shifted SPD -> int32 classes: hops 1..C-1 -> 0..C-2, more hops -> C-1 (SPEC 5)."""
    return jnp.clip(spd - 2, 0, num_classes - 1).astype(jnp.int32)


def edge_targets(
    path_edges: jax.Array, spd: jax.Array, pair_mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """[B, N, N, K, 3] shifted bond ids -> ([B, N, N, K] int32 class, [B, N, N, K] bool valid).

    class = 6*bond_type + 2*stereo + conjugated of the raw ids (SPEC 5). A hop is valid for
    k < min(hops, K) on a reachable pair with a bond present whose ids fit the 24 classes
    (bond types >= 4 or stereo >= 3 are left out).
    """
    raw = path_edges.astype(jnp.int32) - 1
    bond_type, stereo, conjugated = raw[..., 0], raw[..., 1], raw[..., 2]
    num_hops = path_edges.shape[-2]
    hop = jnp.arange(num_hops)
    within_path = hop < jnp.minimum(spd - 1, num_hops)[..., None]
    in_range = (
        (bond_type >= 0)
        & (bond_type < MAX_BOND_TYPE)
        & (stereo >= 0)
        & (stereo < MAX_STEREO)
        & (conjugated >= 0)
        & (conjugated < MAX_CONJUGATED)
    )
    valid = pair_mask[..., None] & within_path & in_range
    classes = 2 * MAX_STEREO * bond_type + MAX_CONJUGATED * stereo + conjugated
    return jnp.where(valid, classes, 0).astype(jnp.int32), valid


def direction_loss(
    direction: jax.Array, coords: jax.Array, pair_mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """[B, N, N, 3] predicted r_j - r_i, [B, N, 3] clean coords, [B, N, N] bool -> (loss, cos).

    1 - cosine, mean over valid pairs per molecule, then over molecules with any valid pair
    (SPEC 5). Coincident pairs (zero target) are left out.
    """
    coords = coords.astype(jnp.float32)
    target = coords[:, None, :, :] - coords[:, :, None, :]
    valid = pair_mask & (safe_norm(target) > 0)
    cosine = cosine_similarity(direction.astype(jnp.float32), target)
    count = jnp.sum(valid, axis=(1, 2)).astype(jnp.float32)
    per_molecule = jnp.sum(jnp.where(valid, cosine, 0.0), axis=(1, 2)) / jnp.maximum(count, 1.0)
    has_pairs = count > 0
    mean_cosine = masked_mean(per_molecule, has_pairs)
    loss = masked_mean(1.0 - per_molecule, has_pairs)
    return loss, mean_cosine


def pretraining_losses(
    outputs: Mapping[str, jax.Array],
    batch: Mapping[str, jax.Array],
    weights: Mapping[str, float],
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MoleBlend pretrain outputs + batch -> (total loss, metrics), all float32 scalars (SPEC 5).

    weights: keys spd, edge, direction, denoise (config.loss_weights).
    """
    pairs = reachable_pairs(batch)
    spd = batch["spd"].astype(jnp.int32)

    spd_logits = outputs["spd_logits"]  # [B, N, N, C], or its FactoredLogits.
    spd_labels = spd_targets(spd, num_classes(spd_logits))
    if isinstance(spd_logits, FactoredLogits):  # One label per pair: hop axis K = 1.
        spd_nll, spd_correct = (
            x[:, :, 0] for x in factored_cross_entropy(spd_logits, spd_labels[:, :, None])
        )
    else:
        spd_nll, spd_correct = cross_entropy(spd_logits, spd_labels)
    spd_loss = masked_mean(spd_nll, pairs)
    spd_accuracy = masked_mean(spd_correct, pairs)

    edge_logits = outputs["edge_logits"]  # [B, N, K, C, N], or its FactoredLogits.
    edge_labels, edge_valid = edge_targets(batch["path_edges"], spd, pairs)  # [B, N, N, K]
    edge_labels, edge_valid = (jnp.transpose(x, (0, 1, 3, 2)) for x in (edge_labels, edge_valid))
    if isinstance(edge_logits, FactoredLogits):
        edge_nll, edge_correct = factored_cross_entropy(edge_logits, edge_labels)
    else:
        edge_nll, edge_correct = cross_entropy(edge_logits, edge_labels, axis=3)
    edge_loss = masked_mean(edge_nll, edge_valid)
    edge_accuracy = masked_mean(edge_correct, edge_valid)

    coord_atoms = atoms_with_coords(batch)
    coord_pairs = real_pairs(batch) & coord_atoms[:, :, None] & coord_atoms[:, None, :]
    dir_loss, dir_cosine = direction_loss(outputs["direction"], batch["coords"], coord_pairs)

    # SPEC 5: denoise over atoms whose node blend chose 3D (and that were actually perturbed).
    noise = outputs["coord_noise"].astype(jnp.float32)
    atoms = coord_atoms & outputs["node_blend_3d"].astype(bool) & (safe_norm(noise) > 0)
    denoise_cosine_per_atom = cosine_similarity(outputs["denoise"].astype(jnp.float32), noise)
    denoise_loss = masked_mean(1.0 - denoise_cosine_per_atom, atoms)
    denoise_cosine = masked_mean(denoise_cosine_per_atom, atoms)

    total = (
        weights["spd"] * spd_loss
        + weights["edge"] * edge_loss
        + weights["direction"] * dir_loss
        + weights["denoise"] * denoise_loss
    ).astype(jnp.float32)
    metrics = {
        "loss": total,
        "spd_loss": spd_loss,
        "edge_loss": edge_loss,
        "direction_loss": dir_loss,
        "denoise_loss": denoise_loss,
        "spd_accuracy": spd_accuracy,
        "edge_accuracy": edge_accuracy,
        "direction_cosine": dir_cosine,
        "denoise_cosine": denoise_cosine,
    }
    return total, {k: v.astype(jnp.float32) for k, v in metrics.items()}
