"""Checkpointer: failed writes are reported at once, the previous checkpoint kept."""

import resource

import numpy as np
import pytest

from moleblend_jax.train import checkpoint


def test_a_failed_save_stops_the_next_step_and_keeps_the_previous_checkpoint(
    tmp_path, file_size_limit
):
    state = {"w": np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)}
    saver = checkpoint.Checkpointer(tmp_path, save_every=1, keep=3)
    assert saver.save(1, state)
    assert saver.save(2, state)  # Waits for step 1: written.
    saver.wait_until_finished()
    file_size_limit(20_000)
    assert saver.save(3, state)  # Started; the write fails in the background.
    with pytest.raises(checkpoint.CheckpointWriteError, match=f"{tmp_path}: writing checkpoint 3"):
        saver.save(4, state)
    file_size_limit(resource.RLIM_INFINITY)
    saver.close()
    assert checkpoint.Checkpointer(tmp_path, 1, 3).latest_step() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]


def _state(step, width=8):
    import jax.numpy as jnp

    from moleblend_jax.train.state import TrainState

    params = {"dense": {"kernel": jnp.full((4, width), float(step))}}
    return TrainState(step=jnp.int32(step), params=params, opt_state={}, rng=jnp.zeros(2, "u4"))


def _abstract(state):
    import jax

    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    saver = checkpoint.Checkpointer(tmp_path, save_every=1, keep=3)
    for step in (1, 2, 3):
        saver.save(step, _state(step))
    saver.close()
    for chunk in (tmp_path / "3").rglob("d/*"):  # Flip a byte of every data file of step 3.
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0xFF
        chunk.write_bytes(bytes(data))
    saver = checkpoint.Checkpointer(tmp_path, save_every=1, keep=3)
    with caplog.at_level("WARNING"):
        restored = saver.restore(_abstract(_state(0)))
    assert int(restored.step) == 2 and float(restored.params["dense"]["kernel"][0, 0]) == 2.0
    assert f"{tmp_path}/3 is unreadable" in caplog.text
    assert saver.latest_step() == 2  # Step 3 deleted: the resumed run saves it anew.

    from moleblend_jax.errors import UserError

    with pytest.raises(UserError, match=r"/2 holds another model: 1 params of other shapes"):
        saver.restore(_abstract(_state(0, width=16)))
    saver.close()


def test_require_same_params_names_whole_modules_and_shapes():
    from moleblend_jax.errors import UserError

    def layer(width):
        return {"q": {"kernel": np.zeros((width, width))}, "ln": {"scale": np.zeros(width)}}

    model = {"embed": np.zeros((9, 4)), "layer_0": layer(4), "layer_1": layer(4)}
    saved = {"embed": np.zeros((9, 4)), "layer_0": layer(4), "head": {"w": np.zeros(4)}}
    with pytest.raises(UserError) as err:
        checkpoint.require_same_params(saved, model, "ckpt", "use its config")
    assert str(err.value) == (
        "ckpt holds another model: 0 params of other shapes [], missing from the checkpoint "
        "['layer_1'], only in the checkpoint ['head']; use its config"
    )
    saved = {"embed": np.zeros((9, 8)), "layer_0": layer(4), "layer_1": {**layer(4), "ln": {}}}
    with pytest.raises(UserError) as err:
        checkpoint.require_same_params(saved, model, "ckpt", "use its config")
    assert "1 params of other shapes ['embed (9, 8) (model (9, 4))']" in str(err.value)
    assert "missing from the checkpoint ['layer_1/ln']" in str(err.value)  # All of it.
    extra = {**model, "head": {"w": np.zeros(4)}}
    checkpoint.require_same_params(extra, model, "ckpt", "", allow_extra=True)  # No error.
    with pytest.raises(UserError, match=r"only in the checkpoint \['head'\]"):
        checkpoint.require_same_params(extra, model, "ckpt", "")
