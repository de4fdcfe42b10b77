"""Checkpoints written with one degree table (before the original's in/out pair) still load."""

import jax
import numpy as np
import pytest
from train_testing import random_params, small_config

from moleblend_jax import model as model_lib
from moleblend_jax.train import checkpoint, legacy_params, loop, optim, sharding
from moleblend_jax.train import state as state_lib


def _one_degree_table(tree):
    """Today's tree as an old checkpoint held it: "in" + "out" summed into one table."""

    def merge(node):
        if not (isinstance(node, dict) and "degree_embed" in node):
            return node
        tables = node["degree_embed"]
        summed = tables["in"]["embedding"] + tables["out"]["embedding"]
        return {**node, "degree_embed": {"embed": {"embedding": summed}}}

    return jax.tree.map(merge, tree, is_leaf=lambda n: isinstance(n, dict) and "degree_embed" in n)


def assert_placed_as(leaf, target):
    assert leaf.shape == target.shape and leaf.sharding == target.sharding


@pytest.fixture(scope="module")
def setup():
    config = small_config()
    mesh = sharding.make_mesh(config.mesh, jax.devices())
    _, tx = optim.pretraining_optimizer(config)
    layout = state_lib.state_layout(
        model_lib.MoleBlend(config=config.model),
        tx,
        loop.dummy_batch(8, 16),
        jax.random.PRNGKey(0),
        mesh,
        config.mesh.rules,
    )
    params = random_params(config)
    opt_state = tx.init(params)
    # Moments that differ from the params, so the test sees which leaf went where.
    opt_state = jax.tree.map(lambda x: x + 0.5 if np.ndim(x) else np.int32(7), opt_state)
    state = state_lib.TrainState(
        step=np.int32(7), params=params, opt_state=opt_state, rng=np.zeros(2, np.uint32)
    )
    return layout, state


def test_split_and_merge_are_inverse_layouts():
    table = np.arange(6.0).reshape(1, 2, 3)
    old = {"encoder": {"degree_embed": {"embed": {"embedding": table}}, "x": np.ones(2)}}
    new = legacy_params.split_degree_table(old)
    assert new["encoder"]["degree_embed"]["in"]["embedding"] is table
    np.testing.assert_array_equal(new["encoder"]["degree_embed"]["out"]["embedding"], 0.0)
    assert legacy_params.merge_degree_tables(new) == {
        "encoder": {"degree_embed": {"embed": {"embedding": table}}, "x": old["encoder"]["x"]}
    }
    assert jax.tree.structure(legacy_params.split_degree_table(new)) == jax.tree.structure(new)
    assert not legacy_params.has_one_degree_table(new)
    assert legacy_params.has_one_degree_table(old)


def test_resuming_an_old_train_state_splits_params_and_adam_moments(setup, tmp_path, caplog):
    layout, state = setup
    old = _one_degree_table(state)
    saver = checkpoint.Checkpointer(tmp_path, save_every=1, keep=1)
    saver.save(7, old)
    saver.close()
    with caplog.at_level("WARNING"):
        restored = checkpoint.Checkpointer(tmp_path, 1, 1).restore(layout.abstract)
    assert f"{tmp_path}/7 was written with one degree table" in caplog.text
    assert jax.tree.structure(restored) == jax.tree.structure(layout.abstract)
    jax.tree.map(assert_placed_as, restored, layout.abstract)

    def degree(tree):
        tables = tree["encoder"]["degree_embed"]
        return np.asarray(tables["in"]["embedding"]), np.asarray(tables["out"]["embedding"])

    adam, old_adam = restored.opt_state[1][0], old.opt_state[1][0]
    for new_tree, old_tree in ((restored.params, old.params), (adam.mu, old_adam.mu)):
        in_table, out_table = degree(new_tree)
        np.testing.assert_array_equal(
            in_table, old_tree["encoder"]["degree_embed"]["embed"]["embedding"]
        )
        np.testing.assert_array_equal(out_table, 0.0)
    assert int(adam.count) == 7
    np.testing.assert_array_equal(
        restored.params["encoder"]["layer_0"]["fc1"]["kernel"],
        state.params["encoder"]["layer_0"]["fc1"]["kernel"],
    )


def test_restore_params_of_an_old_checkpoint_splits_the_table(setup, tmp_path, caplog):
    _, state = setup
    old = _one_degree_table(state.params)
    saver = checkpoint.Checkpointer(tmp_path, save_every=1, keep=1)
    saver.save(3, {"params": old})
    saver.close()
    with caplog.at_level("WARNING"):
        params = checkpoint.restore_params(tmp_path)
    assert "was written with one degree table" in caplog.text
    tables = params["encoder"]["degree_embed"]
    np.testing.assert_array_equal(
        tables["in"]["embedding"], old["encoder"]["degree_embed"]["embed"]["embedding"]
    )
    np.testing.assert_array_equal(tables["out"]["embedding"], 0.0)
    assert jax.tree.structure(params) == jax.tree.structure(state.params)

    caplog.clear()
    saver = checkpoint.Checkpointer(tmp_path / "new", save_every=1, keep=1)
    saver.save(3, {"params": state.params})
    saver.close()
    with caplog.at_level("WARNING"):
        checkpoint.restore_params(tmp_path / "new")
    assert "degree table" not in caplog.text  # Today's layout loads silently.
