"""Training as the original trains: the same trajectory, step for step (docs/interop.md).

From the same trained-like weights (the mirror of the original, converted), batch, forced blend
masks, node blend and noise, without dropout: 8 updates of the original (tests/fairseq_training.py:
fairseq's clip, Adam and cosine schedule in torch) against 8 of our train step, in fp32, with
issue 33's setting (peak lr 1e-3 after 3 warm-up updates, cosine to 0 at 8, weight decay 0.01,
clip 5, which the first updates hit).
"""

import pytest

torch = pytest.importorskip("torch")

import fairseq_training as ft  # noqa: E402
import numpy as np  # noqa: E402

NUM_STEPS = 8
LOSS_TOLERANCE = 1e-5  # Relative, at every step.
PARAM_TOLERANCE = 1e-4  # Of each leaf's largest value, after the last step.


@pytest.fixture(scope="module")
def runs():
    return ft.trajectories(NUM_STEPS)


def test_learning_rates_and_first_gradient_norm_agree(runs):
    original, ours = runs
    np.testing.assert_allclose(ours.lrs, original.lrs, rtol=1e-6, atol=0)
    assert ours.lrs[0] == 0.0 and max(ours.lrs) == pytest.approx(ft.Setting().peak_lr)
    # Both degree tables get the full gradient on both sides.
    np.testing.assert_allclose(ours.grad_norms[0], original.grad_norms[0], rtol=1e-6)
    assert original.grad_norms[0] > ft.Setting().clip_norm  # The clip acts.


def test_losses_and_parameters_follow_the_originals_trajectory(runs):
    original, ours = runs
    diff = ft.differences(original, ours)
    print(
        "\nloss relative difference per step: "
        + " ".join(f"{x:.1e}" for x in diff["loss"])
        + f"\nmax parameter difference / scale: {diff['worst_param']:.1e} ({diff['worst_leaf']})"
    )
    assert max(diff["loss"]) < LOSS_TOLERANCE, diff["loss"]
    assert diff["worst_param"] < PARAM_TOLERANCE, diff["worst_leaf"]
    # The run moved the parameters well beyond the tolerance: the comparison means something.
    moved = ft.differences(
        ft.Trajectory(original.losses, [], [], ft.ours_from_original(*ft.make_original())), ours
    )
    assert moved["worst_param"] > 100 * PARAM_TOLERANCE
