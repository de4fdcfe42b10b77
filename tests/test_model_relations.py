"""Relation encoders, embeddings and the blend against direct numpy evaluations (SPEC 2-4)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import model_references as mref
import model_testing as mt
import numpy as np
import pytest

from moleblend_jax.model import blend, embeddings, platform, relations
from moleblend_jax.model.layers import padded_embedding_init

TOL = dict(rtol=1e-5, atol=1e-5)
CONFIG = mt.small_config()  # 4 heads, hidden 32, 16 kernels, 128 atom types, 5 hops.


@pytest.fixture(scope="module")
def batch():
    return mt.make_batch([mt.chain3(), mt.ring5(), mt.two_fragments(), mt.long_chain(7)], 8, 5)


def test_spd_bias_matches_numpy(batch):
    module = relations.SpdBias(config=CONFIG)
    params = mt.random_params(module, batch["spd"])
    got = module.apply({"params": params}, batch["spd"])
    want = mref.np_spd_bias(params["embed"]["embedding"], batch["spd"])
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("target", ["cpu", "gpu", "tpu"])
def test_edge_bias_matches_numpy(batch, target):
    """All three forms, run here on CPU: the CPU's one gather over all hops, the heads-first
    gather per hop (GPU) and the one-hot matmul (TPU), whose table gradient is rounded to
    bf16 as every matmul parameter's."""
    module = relations.EdgeBias(config=CONFIG)
    args = (batch["path_edges"], batch["spd"])
    params = mt.random_params(module, *args)
    with platform.compiling_for(target):
        got = module.apply({"params": params}, *args)
        grads = jax.grad(lambda p: jnp.sum(module.apply({"params": p}, *args) ** 2))(params)
    hops = CONFIG.max_path_hops
    want = mref.np_edge_bias(params["embedding"], params["hop_weights"], *args, max_hops=hops)
    np.testing.assert_allclose(got, want, **TOL)
    reference = jax.grad(lambda p: jnp.sum(module.apply({"params": p}, *args) ** 2))(params)
    for name, want_grad in reference.items():
        bf16 = dict(rtol=1e-2, atol=1e-2 * np.max(np.abs(want_grad)))
        np.testing.assert_allclose(grads[name], want_grad, **(bf16 if target == "tpu" else TOL))


def test_gaussian_bias_and_centrality_match_numpy(batch):
    distance = mref.np_distances(batch["coords"].astype(np.float64))[0].astype(np.float32)
    types = batch["atom_features"][..., 0]
    basis = relations.GaussianBasis(config=CONFIG)
    basis_params = mt.random_params(basis, distance, types, scale=0.5)
    psi = basis.apply({"params": basis_params}, distance, types)
    floor = CONFIG.gaussian_std_floor
    want_psi = mref.np_gaussian_basis(basis_params, batch["coords"], types, floor)
    np.testing.assert_allclose(psi, want_psi, **TOL)

    bias_module = relations.GaussianBias(config=CONFIG)
    bias_params = mt.random_params(bias_module, psi)
    got = bias_module.apply({"params": bias_params}, psi)
    np.testing.assert_allclose(got, mref.np_gaussian_bias(bias_params, want_psi), **TOL)

    centrality = relations.Centrality(config=CONFIG)
    cent_params = mt.random_params(centrality, psi, batch["atom_mask"])
    got = centrality.apply({"params": cent_params}, psi, batch["atom_mask"])
    want = mref.np_centrality(cent_params, want_psi, batch["atom_mask"], CONFIG.centrality_scale)
    np.testing.assert_allclose(got, want, **TOL)


def test_atom_and_degree_embeddings(batch):
    atom = embeddings.AtomEmbedding(config=CONFIG)
    params = mt.random_params(atom, batch["atom_features"])
    got = atom.apply({"params": params}, batch["atom_features"])
    table = mref.np_table(params["embed"]["embedding"])
    want = sum(table[f][batch["atom_features"][..., f]] for f in range(9))
    np.testing.assert_allclose(got, want, **TOL)

    ids = embeddings.atom_degree(batch["spd"], batch["atom_mask"], 16)
    # chain3: degrees 1, 2, 1; ring5: all 2; padding: 0 (ids are degree + 1).
    np.testing.assert_array_equal(ids[0, :4], [2, 3, 2, 0])
    np.testing.assert_array_equal(ids[1, :5], [3, 3, 3, 3, 3])
    np.testing.assert_array_equal(ids[4], 0)


def test_degree_embedding_sums_two_tables_that_each_train(batch):
    """As the original's in/out-degree pair: two N(0, 0.02) tables with zero pad rows, looked up
    with the same id and summed, each receiving the full gradient."""
    module = embeddings.DegreeEmbedding(config=CONFIG)
    spd, mask = batch["spd"], batch["atom_mask"]
    params = nn.unbox(module.init(jax.random.key(0), spd, mask))["params"]
    assert set(params) == {"in", "out"}
    for table in (params["in"]["embedding"], params["out"]["embedding"]):
        assert table.shape == (1, CONFIG.num_degree_ids, CONFIG.hidden_dim)
        np.testing.assert_array_equal(table[0, 0], 0.0)
        assert 0.015 < float(jnp.std(table[0, 1:])) < 0.025
    assert not np.allclose(params["in"]["embedding"], params["out"]["embedding"])

    ids = embeddings.atom_degree(spd, mask, CONFIG.num_degree_ids)
    want = sum(mref.np_table(params[side]["embedding"])[0][ids] for side in ("in", "out"))
    np.testing.assert_allclose(module.apply({"params": params}, spd, mask), want, **TOL)

    weights = jax.random.normal(jax.random.key(1), want.shape)
    grads = jax.grad(lambda p: jnp.sum(weights * module.apply({"params": p}, spd, mask)))(params)
    np.testing.assert_array_equal(grads["in"]["embedding"], grads["out"]["embedding"])
    assert np.abs(grads["in"]["embedding"]).max() > 0


def test_graph_token_bias_layout():
    atom_bias = jnp.arange(2 * 3 * 2 * 2, dtype=jnp.float32).reshape(2, 3, 2, 2) + 100
    t = jnp.array([1.0, 2.0, 3.0])
    full = np.asarray(embeddings.with_graph_token_bias(atom_bias, t))
    assert full.shape == (2, 3, 3, 3)
    for h in range(3):
        np.testing.assert_array_equal(full[:, h, 0, :], t[h])
        np.testing.assert_array_equal(full[:, h, 1:, 0], t[h])
    np.testing.assert_array_equal(full[:, :, 1:, 1:], atom_bias)


def test_padded_embedding_init_zero_row_and_std():
    table = padded_embedding_init(0.02)(jax.random.key(0), (3, 512, 64))
    np.testing.assert_array_equal(table[:, 0], 0.0)
    assert abs(float(jnp.std(table[:, 1:])) - 0.02) < 1e-3


def test_blend_pair_bias_selects_one_modality():
    rng = np.random.default_rng(0)
    biases = [jnp.asarray(rng.normal(size=(2, 3, 4, 4)), jnp.float32) for _ in range(3)]
    shared = jnp.asarray(rng.integers(0, 3, (4, 4)), jnp.int32)
    per_mol = jnp.asarray(rng.integers(0, 3, (2, 4, 4)), jnp.int32)
    for modality in (shared, per_mol):
        got = blend.blend_pair_bias(modality, *biases)
        m = np.broadcast_to(np.asarray(modality), (2, 4, 4))[:, None]
        want = np.choose(np.broadcast_to(m, (2, 3, 4, 4)), [np.asarray(b) for b in biases])
        np.testing.assert_array_equal(got, want)


def test_blend_statistics_match_probabilities():
    probs = (0.2, 0.2, 0.6)
    draws = blend.sample_pair_modality(jax.random.key(0), probs, 1, 160, False)  # 25,600 pairs
    assert draws.shape == (160, 160)
    freq = np.bincount(np.asarray(draws).ravel(), minlength=3) / draws.size
    np.testing.assert_allclose(freq, probs, atol=0.012)  # ~4 standard errors
    per_mol = blend.sample_pair_modality(jax.random.key(1), probs, 3, 5, True)
    assert per_mol.shape == (3, 5, 5)
    # Ordered pairs are independent: the mask is not symmetric.
    assert not np.array_equal(np.asarray(draws), np.asarray(draws).T)

    mask = jnp.ones((64, 64), bool).at[:, 60:].set(False)
    node = blend.sample_node_blend(jax.random.key(2), 0.6, mask)
    assert not bool(node[:, 60:].any())
    assert abs(float(node[:, :60].mean()) - 0.6) < 0.02
    noise = blend.sample_coord_noise(jax.random.key(3), 0.2, mask)
    assert abs(float(noise[:, :60].std()) - 0.2) < 0.01
    np.testing.assert_array_equal(noise[:, 60:], 0.0)
