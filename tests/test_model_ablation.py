"""The single-modality ablations of the blend (the paper's Table 4; docs/results.md,
experiments/study/cpu_study.sh): a modality with probability 0 is off (SPEC 4)."""

import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest
from train_testing import pretraining_grad_fn

from moleblend_jax.model import PAIR_3D, THREE_D_SUBMODULES, TWO_D_SUBMODULES, MoleBlend, blend

# The single-modality ablations (docs/results.md, experiments/study/cpu_study.sh): the blend with a
# probability of 0 for one modality's relations and node terms.
SINGLE_MODALITY = {
    "2d": dict(blend_probs=(0.5, 0.5, 0.0), node_blend_probs=(1.0, 0.0)),
    "3d": dict(blend_probs=(0.0, 0.0, 1.0), node_blend_probs=(0.0, 1.0)),
}


@pytest.mark.parametrize("relations", sorted(SINGLE_MODALITY))
def test_single_modality_blend_trains_only_that_modality(relations):
    """A modality with probability 0 is never drawn, its encoder modules get exactly zero
    gradients, the loss stays finite; 2D-only has no denoising atoms (its loss is 0), every
    other target (SPD, edge, 3D direction) is still learnt."""
    probs = SINGLE_MODALITY[relations]
    pairs = blend.sample_pair_modality(jax.random.key(0), probs["blend_probs"], 4, 16, True)
    unused_pair = PAIR_3D if relations == "2d" else (blend.PAIR_SPD, blend.PAIR_EDGE)
    assert not bool(jnp.isin(pairs, jnp.asarray(unused_pair)).any())
    model = MoleBlend(mt.small_model_config(num_layers=1, **probs))
    batch = mt.make_batch(mt.default_molecules(), 6, 4)
    params = mt.random_params(model, batch, scale=0.2)
    grad_fn = pretraining_grad_fn(model, batch, params)
    (loss, (metrics, out)), grads = grad_fn(params, jax.random.key(1, impl="rbg"))
    node_3d = out["node_blend_3d"]
    assert bool(jnp.isfinite(loss)) and float(loss) > 0
    unused, used = (
        (THREE_D_SUBMODULES, TWO_D_SUBMODULES)
        if relations == "2d"
        else (TWO_D_SUBMODULES, THREE_D_SUBMODULES)
    )
    for name in unused:
        for leaf in jax.tree_util.tree_leaves(grads["encoder"][name]):
            np.testing.assert_array_equal(leaf, 0.0, err_msg=name)
    for name in used:
        assert any(
            bool(jnp.any(leaf != 0)) for leaf in jax.tree_util.tree_leaves(grads["encoder"][name])
        )
    for head in ("spd_head", "edge_head", "direction_head"):
        assert any(bool(jnp.any(leaf != 0)) for leaf in jax.tree_util.tree_leaves(grads[head]))
    if relations == "2d":
        assert not bool(node_3d.any())
        assert float(metrics["denoise_loss"]) == 0.0
    else:
        np.testing.assert_array_equal(node_3d, batch["atom_mask"])
        assert float(metrics["denoise_loss"]) > 0
