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
