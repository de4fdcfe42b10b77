"""The modality blend (SPEC 4): pair modality masks, node-level blend, coordinate noise.

Pure functions of explicit PRNG keys, so tests can draw or force any mask.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp

# Pair modality ids of the blend mask M (SPEC 4).
PAIR_SPD, PAIR_EDGE, PAIR_3D = 0, 1, 2


def sample_pair_modality(
    key: jax.Array,
    probs: Sequence[float],
    batch_size: int,
    num_atoms: int,
    per_molecule: bool,
) -> jax.Array:
    """-> int32 modality ids per ordered atom pair: [N, N] shared, or [B, N, N] per molecule.

    SPEC 4: categorical over {SPD, edge, 3D} per ordered pair, diagonal included.
    """
    shape = (batch_size, num_atoms, num_atoms) if per_molecule else (num_atoms, num_atoms)
    logits = jnp.log(jnp.asarray(probs, jnp.float32))
    return jax.random.categorical(key, logits, shape=shape).astype(jnp.int32)


def sample_node_blend(key: jax.Array, p_3d: float, atom_mask: jax.Array) -> jax.Array:
    """[B, N] bool atom mask -> [B, N] bool: True where the atom takes 3D centrality (SPEC 4)."""
    return jax.random.bernoulli(key, p_3d, atom_mask.shape) & atom_mask


def sample_coord_noise(key: jax.Array, std: float, atom_mask: jax.Array) -> jax.Array:
    """[B, N] bool -> [B, N, 3] fp32 N(0, std^2) noise, zero at padding atoms (SPEC 4)."""
    noise = std * jax.random.normal(key, (*atom_mask.shape, 3), jnp.float32)
    return jnp.where(atom_mask[..., None], noise, 0.0)


def blend_pair_bias(
    modality: jax.Array, spd_bias: jax.Array, edge_bias: jax.Array, bias_3d: jax.Array
) -> jax.Array:
    """[N, N] or [B, N, N] modality ids, three [B, H, N, N] biases -> [B, H, N, N] blended bias.

    SPEC 4: B_ij = the bias of modality M_ij only, shared over heads.
    """
    if modality.ndim == 2:
        modality = modality[None]
    modality = modality[:, None, :, :]
    return jnp.where(
        modality == PAIR_SPD,
        spd_bias,
        jnp.where(modality == PAIR_EDGE, edge_bias, jnp.where(modality == PAIR_3D, bias_3d, 0.0)),
    )
