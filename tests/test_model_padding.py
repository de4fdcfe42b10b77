"""Padding ids add nothing and train nothing (padding_idx=0, SPEC 2); stochastic depth masks."""

import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest
from train_testing import pretraining_grad_fn

from moleblend_jax.model import MoleBlend
from moleblend_jax.model.encoder_layer import DropPath

# Every table that padding ids (0) index: padded atoms, self / padded / unreachable pairs,
# padded hops of the multi-hop path.
PADDED_TABLES = (
    ("encoder", "atom_embed", "embed", "embedding"),
    ("encoder", "degree_embed", "in", "embedding"),
    ("encoder", "degree_embed", "out", "embedding"),
    ("encoder", "spd_bias", "embed", "embedding"),
    ("encoder", "edge_bias", "embedding"),
    ("encoder", "gaussian_basis", "mul"),
    ("encoder", "gaussian_basis", "bias"),
)


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return np.asarray(tree)


def _with_pad_rows(params, value):
    """Params with row 0 of every padded table set to `value`."""
    params = jax.tree_util.tree_map(np.array, params)
    for path in PADDED_TABLES:
        _get(params, path)[..., 0, :] = value
    return params


@pytest.fixture(scope="module")
def setup():
    # Padded atoms and molecules, self pairs, unreachable pairs (two fragments) and paths of
    # 1..5 hops (long chain), all with stored pad rows far from zero.
    model = MoleBlend(mt.small_model_config(num_layers=1))
    molecules = [mt.two_fragments(), mt.long_chain(7), mt.ring5(), mt.chain3()]
    batch = mt.make_batch(molecules, num_atoms=8, num_molecules=5)
    params = _with_pad_rows(mt.random_params(model, batch, scale=0.2), 0.7)
    return model, batch, params


def test_pad_rows_get_exactly_zero_gradient(setup):
    model, batch, params = setup
    grad_fn = pretraining_grad_fn(model, batch, params)
    for seed in range(2):
        _, grads = grad_fn(params, jax.random.key(seed, impl="rbg"))
        for path in PADDED_TABLES:
            grad = _get(grads, path)
            np.testing.assert_array_equal(grad[..., 0, :], 0.0, err_msg="/".join(path))
            assert np.abs(grad[..., 1:, :]).max() > 0, "/".join(path)  # Used rows do train.


def test_stored_pad_rows_change_no_output(setup):
    model, batch, params = setup
    num_atoms = batch["atom_mask"].shape[1]
    rng = np.random.default_rng(0)
    blend = {  # All three pair modalities and both node terms in use.
        "pair_modality": rng.integers(0, 3, (num_atoms, num_atoms)).astype(np.int32),
        "node_blend_3d": rng.random(batch["atom_mask"].shape) < 0.5,
    }
    apply = jax.jit(lambda p: model.apply({"params": p}, batch, blend=blend))
    reference = apply(_with_pad_rows(params, 0.0))
    perturbed = apply(params)  # Pad rows 0.7.
    for name in ("graph_repr", "atom_repr", "spd_logits", "edge_logits", "direction", "denoise"):
        np.testing.assert_array_equal(perturbed[name], reference[name], err_msg=name)


@pytest.mark.parametrize("mask, varying_axis", [("token", 1), ("molecule", 0)])
def test_stochastic_depth_mask_shapes(mask, varying_axis):
    """ "token" (the original's): a position is dropped in every molecule at once;
    "molecule": a molecule's whole branch is dropped."""
    x = jnp.ones((64, 48, 4))
    rate = 0.5
    out = np.asarray(
        DropPath(rate, mask).apply({}, x, train=True, rngs={"dropout": jax.random.key(0)})
    )
    assert set(np.unique(out)) == {0.0, 1.0 / (1.0 - rate)}
    kept = out[..., 0] > 0  # [B, L]
    constant_axis = 1 - varying_axis
    assert (kept == kept.take([0], axis=constant_axis)).all()  # Shared along the other axis.
    assert 0.3 < kept.mean() < 0.7 and len(np.unique(kept.take(0, axis=constant_axis))) == 2
    assert (out[..., :1] == out).all()  # The whole feature vector.
    np.testing.assert_array_equal(DropPath(rate, mask).apply({}, x, train=False), x)


def test_stochastic_depth_mask_is_checked():
    with pytest.raises(ValueError, match="stochastic_depth_mask"):
        mt.small_config(stochastic_depth_mask="sample")
