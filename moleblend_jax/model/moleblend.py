"""MoleBlend: the encoder plus, in pretraining, the blend draws and the four heads (SPEC 4-5)."""

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from moleblend_jax.model import platform
from moleblend_jax.model.blend import (
    PAIR_3D,
    sample_coord_noise,
    sample_node_blend,
    sample_pair_modality,
)
from moleblend_jax.model.config import ModelConfig
from moleblend_jax.model.encoder import MoleBlendEncoder, atoms_with_coords
from moleblend_jax.model.heads import DenoiseHead, DirectionHead, PairHead


class MoleBlend(nn.Module):
    """The pretraining model: the encoder over both modalities, blended, and the four heads.

    `config` is config.model (a ConfigDict, converted once on construction) or a ModelConfig.
    Fine-tuning wraps `MoleBlendEncoder` instead.

    Randomness (train=True): rngs "dropout" (attention/activation dropout, stochastic depth),
    "blend" (pair and node modality masks) and "noise" (coordinate noise, SPEC 4).
    train=False: no dropout/stochastic depth/noise; blend masks come from the "blend" rng if one is
    given, else the deterministic rule "all pairs and atoms 3D".
    Molecules with batch["has_coords"] false get no noise, no 3D node term and no 3D bias
    (`encoder.atoms_with_coords`, computed once here and handed to the encoder).
    `blend` (optional) forces any of "pair_modality" ([N, N] or [B, N, N] int32, blend.PAIR_*),
    "node_blend_3d" ([B, N] bool) and "coord_noise" ([B, N, 3]), e.g. for tests.
    """

    config: ModelConfig

    def __post_init__(self):
        self.config = ModelConfig.coerce(self.config)
        super().__post_init__()

    def _draw_blend(
        self, coord_mask: jax.Array, train: bool, blend: Mapping
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """[B, N] bool atoms with coordinates -> ([N, N] or [B, N, N] pair modality,
        [B, N] node 3D, [B, N, 3] noise); node blend and noise stay inside `coord_mask`."""
        cfg = self.config
        batch_size, num_atoms = coord_mask.shape
        needs_blend_rng = "pair_modality" not in blend or "node_blend_3d" not in blend
        if needs_blend_rng and self.has_rng("blend"):
            pair_key, node_key = jax.random.split(self.make_rng("blend"))
            pair = sample_pair_modality(
                pair_key, cfg.blend_probs, batch_size, num_atoms, cfg.blend_per_molecule
            )
            node = sample_node_blend(node_key, cfg.node_blend_p_3d, coord_mask)
        elif needs_blend_rng and train:
            raise ValueError("MoleBlend(train=True) needs a 'blend' rng (or forced blend masks).")
        else:  # Deterministic eval rule: everything 3D.
            pair = jnp.full((num_atoms, num_atoms), PAIR_3D, jnp.int32)
            node = coord_mask
        pair = jnp.asarray(blend.get("pair_modality", pair), jnp.int32)
        node = jnp.asarray(blend.get("node_blend_3d", node), bool) & coord_mask
        if "coord_noise" in blend:
            noise = jnp.where(
                coord_mask[..., None], jnp.asarray(blend["coord_noise"], jnp.float32), 0
            )
        elif train and cfg.coord_noise_std > 0:
            noise = sample_coord_noise(self.make_rng("noise"), cfg.coord_noise_std, coord_mask)
        else:
            noise = jnp.zeros((*coord_mask.shape, 3), jnp.float32)
        return pair, node, noise

    @nn.compact
    def __call__(
        self, batch: Mapping, train: bool = False, blend: Mapping | None = None
    ) -> dict[str, jax.Array]:
        """Batch per docs/batch_format.md -> dict of float32 outputs (see docs/model.md)."""
        cfg = self.config
        coord_mask = atoms_with_coords(batch)
        pair, node_blend_3d, noise = self._draw_blend(coord_mask, train, blend or {})
        noisy_coords = batch["coords"].astype(jnp.float32) + noise  # SPEC 4: all 3D inputs noisy.
        graph_repr, atom_repr, atom_bias = MoleBlendEncoder(config=cfg, name="encoder")(
            batch,
            train,
            pair_modality=pair,
            node_blend_3d=node_blend_3d,
            coords=noisy_coords,
            coord_mask=coord_mask,
        )

        # With Pallas kernels the two classification heads' logits are never formed: the loss
        # takes their factors (pallas_cross_entropy.FactoredLogits, bias [hops, classes]).
        factored = platform.pallas_kernels()
        spd_logits = PairHead(
            config=cfg, out_features=cfg.num_spd_classes, factored=factored, name="spd_head"
        )(atom_repr)
        if factored:
            spd_logits = spd_logits._replace(bias=spd_logits.bias[None])
        # Edge logits stay in the matmul's [B, N, K*C, N] layout: transposing the step's largest
        # tensor cost more than the loss saves by reading classes last (docs/model.md).
        hops, classes = cfg.max_path_hops, cfg.num_edge_classes
        edge_logits = PairHead(
            config=cfg,
            out_features=hops * classes,
            classes_before_j=True,
            factored=factored,
            name="edge_head",
        )(atom_repr)
        batch_size, num_atoms = atom_repr.shape[:2]
        if factored:
            edge_logits = edge_logits._replace(bias=edge_logits.bias.reshape(hops, classes))
        else:
            edge_logits = edge_logits.reshape(batch_size, num_atoms, hops, classes, num_atoms)
        direction = DirectionHead(
            config=cfg, out_features=cfg.direction_hidden_dim, name="direction_head"
        )(atom_repr)
        atom_mask = batch["atom_mask"].astype(bool)
        denoise = DenoiseHead(config=cfg, name="denoise_head")(
            atom_repr, atom_bias, noisy_coords, atom_mask, train
        )
        return {
            "graph_repr": graph_repr,
            "atom_repr": atom_repr,
            "spd_logits": spd_logits,
            "edge_logits": edge_logits,
            "direction": direction,
            "denoise": denoise,
            "coord_noise": noise,
            "node_blend_3d": node_blend_3d,
        }
