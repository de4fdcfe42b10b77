"""Whole MoleBlend model: numpy reference, padding, symmetry, edge cases, bf16 (SPEC 2-5, 9)."""

import chex
import jax
import jax.numpy as jnp
import model_references as mref
import model_testing as mt
import numpy as np
import pytest
from train_testing import pretraining_grad_fn

from moleblend_jax.configs import base
from moleblend_jax.model import (
    PAIR_3D,
    TWO_D_SUBMODULES,
    MoleBlend,
)
from moleblend_jax.train.losses import pretraining_losses

PAIR_KEYS = ("spd_logits", "edge_logits", "direction")
ATOM_KEYS = ("atom_repr", "denoise")


def make_apply(model):
    """One jitted eval apply per model; blend masks are traced arguments."""
    return jax.jit(lambda params, batch, blend: model.apply({"params": params}, batch, blend=blend))


@pytest.fixture(scope="module")
def setup():
    cfg = mt.small_model_config()
    model = MoleBlend(cfg)
    batch = mt.make_batch(mt.default_molecules(), num_atoms=6, num_molecules=4)
    params = mt.random_params(model, batch, scale=0.2)
    return cfg, model, params, batch, make_apply(model)


def random_blend(batch, seed=0):
    rng = np.random.default_rng(seed)
    b, n = batch["atom_mask"].shape
    return {
        "pair_modality": rng.integers(0, 3, (n, n)).astype(np.int32),
        "node_blend_3d": rng.random((b, n)) < 0.6,
        "coord_noise": (0.2 * rng.normal(size=(b, n, 3))).astype(np.float32),
    }


def test_forward_matches_numpy(setup):
    cfg, _, params, batch, apply = setup
    blend = random_blend(batch)
    out = apply(params, batch, blend)
    p = params["encoder"]
    noisy = batch["coords"] + blend["coord_noise"] * batch["atom_mask"][..., None]
    node_3d = blend["node_blend_3d"] & batch["atom_mask"]
    graph, atoms, atom_bias = mref.np_encoder(p, cfg, batch, blend["pair_modality"], node_3d, noisy)
    assert_close = mt.assert_close_fp32
    assert_close(out["graph_repr"], graph)
    assert_close(out["atom_repr"], atoms)
    assert_close(out["spd_logits"], mref.np_pair_head(params["spd_head"], atoms))
    edge_logits = mref.np_pair_head(params["edge_head"], atoms).reshape(4, 6, 6, 5, 24)
    assert_close(out["edge_logits"], edge_logits.transpose(0, 1, 3, 4, 2))
    assert_close(out["direction"], mref.np_direction_head(params["direction_head"], atoms))
    denoise = mref.np_denoise_head(
        params["denoise_head"], atoms, atom_bias, noisy, batch["atom_mask"], cfg.num_heads
    )
    assert_close(out["denoise"], denoise)
    np.testing.assert_array_equal(out["node_blend_3d"], node_3d)
    for key, value in out.items():
        assert value.dtype == (bool if key == "node_blend_3d" else jnp.float32), key


def _pad_blend(blend, b, n):
    b0, n0 = blend["node_blend_3d"].shape
    pair = np.zeros((n, n), np.int32)
    pair[:n0, :n0] = blend["pair_modality"]
    node = np.zeros((b, n), bool)
    node[:b0, :n0] = blend["node_blend_3d"]
    noise = np.zeros((b, n, 3), np.float32)
    noise[:b0, :n0] = blend["coord_noise"]
    return {"pair_modality": pair, "node_blend_3d": node, "coord_noise": noise}


def _pair_major(out, key):
    """out[key] as [B, N, N, ...]; edge_logits are stored [B, N, K, C, N] (docs/model.md)."""
    value = np.asarray(out[key])
    return value.transpose(0, 1, 4, 2, 3) if key == "edge_logits" else value


def test_padding_invariance(setup):
    _, _, params, batch, apply = setup
    blend = random_blend(batch, seed=1)
    out = apply(params, batch, blend)
    padded = mt.make_batch(mt.default_molecules(), num_atoms=9, num_molecules=6)
    out_padded = apply(params, padded, _pad_blend(blend, 6, 9))
    real = batch["mol_mask"]
    close = mt.assert_close_fp32
    close(out_padded["graph_repr"][:4][real], out["graph_repr"][real])
    for key in ATOM_KEYS:
        close(out_padded[key][:4, :6], out[key])
    for key in PAIR_KEYS:
        mask = batch["atom_mask"][:, :, None] & batch["atom_mask"][:, None, :]
        close(_pair_major(out_padded, key)[:4, :6, :6][mask], _pair_major(out, key)[mask])
    losses = jax.jit(pretraining_losses)
    weights = dict(base.get_config().loss_weights)
    loss, _ = losses(out, batch, weights)
    loss_padded, _ = losses(out_padded, padded, weights)
    np.testing.assert_allclose(loss_padded, loss, rtol=1e-5)


def test_molecules_without_coords_ignore_them(setup):
    """has_coords false: no node blend, noise, 3D bias or centrality, so the molecule's
    coordinates change nothing (pretraining model and a standalone 3D encoder)."""
    _, model, params, batch, apply = setup
    batch = dict(batch, has_coords=np.array([1, 0, 1, 1], np.int32))
    moved = dict(batch, coords=batch["coords"].copy())
    moved["coords"][1] += np.float32([[0.3, -1.0, 2.0]]) * batch["atom_mask"][1, :, None]
    blend = random_blend(batch, seed=4)
    out, out_moved = apply(params, batch, blend), apply(params, moved, blend)
    assert not bool(out["node_blend_3d"][1].any()) and bool(out["node_blend_3d"][0].any())
    np.testing.assert_array_equal(out["coord_noise"][1], 0.0)
    for key in ("graph_repr", "atom_repr", "spd_logits", "edge_logits"):
        np.testing.assert_allclose(out_moved[key][1], out[key][1], rtol=1e-6, atol=1e-6)

    encoder_3d = mt.Backbone(model.config, **mt.MODALITIES["3d"])
    encoder_params = {
        "encoder": {k: v for k, v in params["encoder"].items() if k not in TWO_D_SUBMODULES}
    }
    encode = jax.jit(lambda b: encoder_3d.apply({"params": encoder_params}, b)["graph_repr"])
    graph, graph_moved = encode(batch), encode(moved)
    np.testing.assert_allclose(graph_moved[1], graph[1], rtol=1e-6, atol=1e-6)
    assert float(jnp.abs(graph_moved[0] - graph[0]).max()) == 0.0  # Molecule 0 was not moved.


def test_rigid_motion_invariance(setup):
    _, _, params, batch, apply = setup
    blend = random_blend(batch, seed=2)
    rot = mt.rotation_matrix(3).astype(np.float32)
    moved = dict(batch)
    moved["coords"] = (batch["coords"] @ rot.T + np.float32([3.0, -1.0, 2.0])) * batch["atom_mask"][
        ..., None
    ]
    moved_blend = dict(blend, coord_noise=blend["coord_noise"] @ rot.T)
    out = apply(params, batch, blend)
    out_moved = apply(params, moved, moved_blend)
    for key in ("graph_repr", "atom_repr", "spd_logits", "edge_logits", "direction"):
        mt.assert_close_fp32(out_moved[key], out[key], tol=1e-4)
    losses = jax.jit(pretraining_losses)
    weights = dict(base.get_config().loss_weights)
    _, metrics = losses(out, batch, weights)
    _, metrics_moved = losses(out_moved, moved, weights)
    for key in ("spd_loss", "edge_loss"):
        np.testing.assert_allclose(metrics_moved[key], metrics[key], rtol=1e-5, atol=1e-6)


def test_atom_permutation_equivariance(setup):
    _, _, params, batch, apply = setup
    blend = random_blend(batch, seed=4)
    blend["node_blend_3d"] = np.ones_like(blend["node_blend_3d"])
    perm = np.array([2, 0, 1, 4, 3, 5])  # permutes within every molecule's padded slots
    permuted = dict(batch)
    for key in ("atom_features", "atom_mask", "coords"):
        permuted[key] = batch[key][:, perm]
    permuted["spd"] = batch["spd"][:, perm][:, :, perm]
    permuted["path_edges"] = batch["path_edges"][:, perm][:, :, perm]
    permuted_blend = {
        "pair_modality": blend["pair_modality"][perm][:, perm],
        "node_blend_3d": blend["node_blend_3d"][:, perm],
        "coord_noise": blend["coord_noise"][:, perm],
    }
    out = apply(params, batch, blend)
    out_perm = apply(params, permuted, permuted_blend)
    close = mt.assert_close_fp32
    close(out_perm["graph_repr"], out["graph_repr"])
    for key in ATOM_KEYS:
        close(out_perm[key], out[key][:, perm])
    for key in PAIR_KEYS:
        close(_pair_major(out_perm, key), _pair_major(out, key)[:, perm][:, :, perm])


def test_eval_without_blend_rng_is_all_3d(setup):
    _, model, params, batch, apply = setup
    out = jax.jit(lambda p, b: model.apply({"params": p}, b))(params, batch)
    forced = apply(
        params,
        batch,
        {
            "pair_modality": np.full((6, 6), PAIR_3D, np.int32),
            "node_blend_3d": batch["atom_mask"],
            "coord_noise": np.zeros((4, 6, 3), np.float32),
        },
    )
    for key in out:
        mt.assert_close_fp32(out[key], forced[key])
    np.testing.assert_array_equal(out["coord_noise"], 0.0)
    with pytest.raises(ValueError, match="blend"):
        model.apply({"params": params}, batch, train=True, rngs={"dropout": jax.random.key(0)})


def test_degenerate_molecules_train_step_finite():
    """1-atom molecule, coincident atoms, fragments, fully padded filler: finite outputs, grads."""
    # One layer and "rbg" keys keep this backward-pass compile cheap on CPU.
    model = MoleBlend(mt.small_model_config(num_layers=1))
    batch = mt.make_batch([mt.single_atom(), mt.coincident(), mt.two_fragments()], 6, 4)
    params = mt.random_params(model, batch, scale=0.2)
    # XLA:CPU backend optimisation off: this backward pass otherwise dominates the suite's time.
    grad_fn = pretraining_grad_fn(model, batch, params)
    (loss, (metrics, out)), grads = grad_fn(params, jax.random.key(0, impl="rbg"))
    for tree in (metrics, out, grads):
        for leaf in jax.tree_util.tree_leaves(tree):
            assert bool(jnp.all(jnp.isfinite(leaf))), tree
    assert float(loss) > 0
    # The filler molecule (index 3) has no real atoms: noise and node blend stay off.
    np.testing.assert_array_equal(out["coord_noise"][3], 0.0)
    assert not bool(out["node_blend_3d"][3].any())
    assert float(jnp.abs(out["coord_noise"][:3]).sum()) > 0


def test_bf16_matches_fp32_and_compiles_once_per_shape(setup):
    cfg, model, params, batch, apply = setup
    blend = random_blend(batch, seed=5)
    model_bf16 = MoleBlend(mt.small_model_config(dtype="bfloat16"))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def apply_bf16(params, batch, blend):
        return model_bf16.apply({"params": params}, batch, blend=blend)

    out32 = apply(params, batch, blend)
    out16 = apply_bf16(params, batch, blend)
    for key in ("graph_repr", "atom_repr", "spd_logits", "denoise"):
        assert out16[key].dtype == jnp.float32
        scale = float(jnp.abs(out32[key]).max())
        err = float(jnp.abs(out16[key] - out32[key]).max())
        assert err < 0.05 * max(scale, 1.0), (key, err, scale)
    # Same shapes, new values (other molecules, masks, noise): no retrace (max_traces n=1).
    apply_bf16(params, mt.make_batch([mt.ring5(), mt.chain3()], 6, 4), random_blend(batch, 6))


def test_real_molecules_through_pad_batch(setup):
    """RDKit molecules via moleblend_jax.chem + data.pad_batch (the data engineer's batches)."""
    chem = pytest.importorskip("moleblend_jax.chem")
    from moleblend_jax.data.batching import pad_batch

    _, model, params, _, _ = setup
    records = [
        chem.smiles_to_record("CC(=O)Oc1ccccc1C(=O)O", 0, conformers="rdkit"),
        chem.smiles_to_record("C/C=C/Cl.O", 1, conformers="rdkit"),
        chem.smiles_to_record("[Na+]", 2, conformers="rdkit"),
        chem.smiles_to_record("c1ccncc1", 3, conformers="none"),
    ]
    batch = pad_batch(records, num_atoms=16, batch_size=5)
    out = jax.jit(lambda p, b: model.apply({"params": p}, b))(params, batch)
    for key, value in out.items():
        assert bool(jnp.all(jnp.isfinite(value))) if value.dtype != bool else True, key
    # Pyridine has no coordinates: no 3D node term; the filler molecule has nothing.
    assert not bool(out["node_blend_3d"][3].any()) and not bool(out["node_blend_3d"][4].any())
    assert bool(out["node_blend_3d"][0, : len(records[0]["atom_features"])].all())
    total, metrics = jax.jit(pretraining_losses)(out, batch, dict(base.get_config().loss_weights))
    assert all(bool(jnp.isfinite(v)) for v in metrics.values())
