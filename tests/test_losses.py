"""Pretraining losses against a direct numpy evaluation of SPEC 5; masks; sharding."""

import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest

from moleblend_jax.configs import base
from moleblend_jax.train import losses

WEIGHTS = dict(base.get_config().loss_weights)


def _molecules():
    ring = mt.ring5()
    ring.bonds[0] = (0, 1, (1, 3, 1))  # stereo 3 (CIS): outside the 24 edge classes
    return [mt.chain3(), ring, mt.two_fragments(), mt.long_chain(13), mt.single_atom()]


@pytest.fixture(scope="module")
def case():
    batch = mt.make_batch(_molecules(), num_atoms=13, num_molecules=8)
    batch["has_coords"] = batch["mol_mask"].copy()
    batch["has_coords"][1] = False  # ring: no coordinates -> no 3D losses
    rng = np.random.default_rng(0)
    b, n = batch["atom_mask"].shape
    outputs = {
        "spd_logits": rng.normal(size=(b, n, n, 11)).astype(np.float32),
        # [b, i, k, c, j] (docs/model.md).
        "edge_logits": rng.normal(size=(b, n, 5, 24, n)).astype(np.float32),
        "direction": rng.normal(size=(b, n, n, 3)).astype(np.float32),
        "denoise": rng.normal(size=(b, n, 3)).astype(np.float32),
        "coord_noise": (0.2 * rng.normal(size=(b, n, 3)) * batch["atom_mask"][..., None]).astype(
            np.float32
        ),
        "node_blend_3d": (rng.random((b, n)) < 0.6) & batch["atom_mask"],
    }
    return outputs, batch


def _ce(logits, label):
    logits = logits.astype(np.float64)
    return np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[label]


def _cos(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def np_pretraining_losses(out, batch):
    """SPEC 5 evaluated item by item."""
    spd_items, spd_hits, edge_items, edge_hits, mol_dir, den = [], [], [], [], [], []
    for m in np.flatnonzero(batch["mol_mask"]):
        atoms = np.flatnonzero(batch["atom_mask"][m])
        coords = batch["coords"][m].astype(np.float64)
        dir_terms = []
        for i in atoms:
            for j in atoms:
                if i == j:
                    continue
                hops = batch["spd"][m, i, j] - 1
                if hops != mt.UNREACHABLE_SPD:
                    label = min(hops, 11) - 1
                    spd_items.append(_ce(out["spd_logits"][m, i, j], label))
                    spd_hits.append(out["spd_logits"][m, i, j].argmax() == label)
                    for k in range(min(hops, 5)):
                        bt, st, cj = batch["path_edges"][m, i, j, k] - 1
                        if bt < 4 and st < 3 and cj < 2:
                            label = 6 * bt + 2 * st + cj
                            logits = out["edge_logits"][m, i, k, :, j]
                            edge_items.append(_ce(logits, label))
                            edge_hits.append(logits.argmax() == label)
                target = coords[j] - coords[i]
                if batch["has_coords"][m] and np.linalg.norm(target) > 0:
                    dir_terms.append(_cos(out["direction"][m, i, j], target))
            noise = out["coord_noise"][m, i]
            if batch["has_coords"][m] and out["node_blend_3d"][m, i] and np.any(noise != 0):
                den.append(_cos(out["denoise"][m, i], noise))
        if dir_terms:
            mol_dir.append(np.mean(dir_terms))
    metrics = {
        "spd_loss": np.mean(spd_items),
        "edge_loss": np.mean(edge_items),
        "direction_loss": 1 - np.mean(mol_dir),
        "denoise_loss": 1 - np.mean(den),
        "spd_accuracy": np.mean(spd_hits),
        "edge_accuracy": np.mean(edge_hits),
        "direction_cosine": np.mean(mol_dir),
        "denoise_cosine": np.mean(den),
    }
    metrics["loss"] = sum(WEIGHTS[k] * metrics[f"{k}_loss"] for k in WEIGHTS)
    return metrics


def test_losses_match_numpy(case):
    outputs, batch = case
    total, metrics = jax.jit(losses.pretraining_losses)(outputs, batch, WEIGHTS)
    want = np_pretraining_losses(outputs, batch)
    assert set(metrics) == set(want)
    for key, value in want.items():
        assert metrics[key].dtype == jnp.float32 and metrics[key].shape == ()
        np.testing.assert_allclose(metrics[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(total, want["loss"], rtol=1e-5)


def test_edge_targets_classes():
    # Hop 0: bond (type 1, stereo 2, conj 1) -> 6 + 4 + 1 = 11; hop 1: stereo 4 -> invalid.
    path_edges = np.zeros((1, 1, 2, 5, 3), np.int32)
    path_edges[0, 0, 1, 0] = np.array([1, 2, 1]) + 1
    path_edges[0, 0, 1, 1] = np.array([0, 4, 0]) + 1
    spd = np.array([[[1, 3]]], np.int32)  # 2 hops
    pair_mask = np.array([[[False, True]]])
    classes, valid = losses.edge_targets(path_edges, spd, pair_mask)
    assert int(classes[0, 0, 1, 0]) == 11
    np.testing.assert_array_equal(valid[0, 0, 1], [True, False, False, False, False])
    np.testing.assert_array_equal(
        losses.spd_targets(jnp.array([2, 3, 11, 12, 40]), 11), [0, 1, 9, 10, 10]
    )


def test_filler_and_padding_do_not_count(case):
    outputs, batch = case
    _, metrics = losses.pretraining_losses(outputs, batch, WEIGHTS)
    # Garbage in filler molecules / padding atoms must not change anything.
    noisy = {k: np.array(v) for k, v in outputs.items()}
    pad = ~batch["atom_mask"] | ~batch["mol_mask"][:, None]
    for key in ("spd_logits", "edge_logits", "direction"):
        noisy[key][pad] = 1e3
    noisy["denoise"][pad] = -7.0
    _, metrics_noisy = losses.pretraining_losses(noisy, batch, WEIGHTS)
    for key in metrics:
        np.testing.assert_allclose(metrics_noisy[key], metrics[key], rtol=1e-6, err_msg=key)


def test_sharded_batch_gives_the_same_losses(case):
    outputs, batch = case
    batch = {k: v for k, v in batch.items() if k != "id"}
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("data",))
    shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    sharded_batch = jax.device_put(batch, shard)
    sharded_outputs = jax.device_put(outputs, shard)
    _, sharded = jax.jit(losses.pretraining_losses)(sharded_outputs, sharded_batch, WEIGHTS)
    _, plain = jax.jit(losses.pretraining_losses)(outputs, batch, WEIGHTS)
    for key in plain:
        np.testing.assert_allclose(sharded[key], plain[key], rtol=1e-6, err_msg=key)


def test_zero_vectors_have_finite_gradients():
    def f(direction, denoise):
        out = {
            "spd_logits": jnp.zeros((1, 2, 2, 11)),
            "edge_logits": jnp.zeros((1, 2, 5, 24, 2)),
            "direction": direction,
            "denoise": denoise,
            "coord_noise": jnp.zeros((1, 2, 3)),
            "node_blend_3d": jnp.ones((1, 2), bool),
        }
        batch = mt.make_batch([mt.coincident()])
        return losses.pretraining_losses(out, batch, WEIGHTS)[0]

    grads = jax.jit(jax.grad(f, argnums=(0, 1)))(jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 3)))
    assert all(bool(jnp.isfinite(g).all()) for g in grads)


def test_pair_losses_weight_each_molecule_by_its_pairs(case):
    """Within a batch, the SPD and edge losses are flat means over pairs (pair-hops): a
    molecule counts with its number of pairs, as in the original's randomly composed batches
    (docs/model.md). Split into one-molecule batches, the batch loss is their pair-weighted
    mean."""
    outputs, batch = case
    _, whole = losses.pretraining_losses(outputs, batch, WEIGHTS)
    per_molecule, num_pairs = [], []
    for m in np.flatnonzero(batch["mol_mask"])[:4]:  # The single atom has no pair.
        one = {k: np.where(np.arange(len(v)) == m, v.T, 0).T for k, v in batch.items()}
        one["mol_mask"] = np.arange(len(batch["mol_mask"])) == m
        per_molecule.append(losses.pretraining_losses(outputs, one, WEIGHTS)[1]["spd_loss"])
        num_pairs.append(int(losses.reachable_pairs(one).sum()))
    assert len(set(num_pairs)) > 1  # Molecules of different sizes.
    np.testing.assert_allclose(
        whole["spd_loss"], np.average(per_molecule, weights=num_pairs), rtol=1e-5
    )
