"""Masked ROC-AUC / PRC-AUC / RMSE / MAE / R² against scikit-learn and Spearman against scipy,
on fixed arrays."""

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import (
    auc,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_curve,
    r2_score,
    roc_auc_score,
)

from moleblend_jax.finetune import metrics


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 4)) < 0.3).astype(np.float32)
    scores = rng.normal(size=(200, 4)) + labels  # Informative but imperfect.
    scores[:, 1] = np.round(scores[:, 1])  # Many ties.
    mask = rng.random((200, 4)) < 0.8
    labels[:, 3] = 0.0  # One class only: must be skipped.
    labels[~mask] = np.nan
    return labels, scores, mask


def test_roc_auc_matches_sklearn(arrays):
    labels, scores, mask = arrays
    mean, per_task = metrics.roc_auc(labels, scores, mask)
    expected = [roc_auc_score(labels[mask[:, t], t], scores[mask[:, t], t]) for t in range(3)]
    np.testing.assert_allclose(per_task[:3], expected, rtol=1e-12)
    assert np.isnan(per_task[3])
    assert mean == pytest.approx(np.mean(expected), rel=1e-12)


def test_roc_auc_default_mask_is_non_nan(arrays):
    labels, scores, mask = arrays
    assert metrics.roc_auc(labels, scores)[1][:3] == metrics.roc_auc(labels, scores, mask)[1][:3]


def test_roc_auc_small_cases():
    assert metrics.binary_roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert metrics.binary_roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5
    assert np.isnan(metrics.binary_roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))
    mean, per_task = metrics.roc_auc(np.array([0, 1, 1.0]), np.array([0.1, 0.9, 0.8]))
    assert mean == 1.0 and per_task == [1.0]
    all_nan, _ = metrics.roc_auc(np.ones((3, 2)), np.zeros((3, 2)))
    assert np.isnan(all_nan)


def test_average_ranks():
    values = np.array([3.0, 1.0, 3.0, 2.0, 3.0])
    np.testing.assert_array_equal(metrics.average_ranks(values), [4.0, 1.0, 4.0, 2.0, 4.0])


def test_rmse_and_mae_match_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.normal(size=(50, 3))
    preds = labels + rng.normal(scale=0.5, size=(50, 3))
    mask = rng.random((50, 3)) < 0.7
    mask[:, 2] = False  # No labels: NaN and left out of the mean.
    labels_nan = np.where(mask, labels, np.nan)
    rmse_mean, rmse_tasks = metrics.rmse(labels_nan, preds, mask)
    mae_mean, mae_tasks = metrics.mae(labels_nan, preds, mask)
    for t in range(2):
        m = mask[:, t]
        assert rmse_tasks[t] == pytest.approx(
            np.sqrt(mean_squared_error(labels[m, t], preds[m, t]))
        )
        assert mae_tasks[t] == pytest.approx(mean_absolute_error(labels[m, t], preds[m, t]))
    assert np.isnan(rmse_tasks[2]) and np.isnan(mae_tasks[2])
    assert rmse_mean == pytest.approx(np.mean(rmse_tasks[:2]))
    assert mae_mean == pytest.approx(np.mean(mae_tasks[:2]))


def test_masked_values_do_not_count():
    labels = np.array([[1.0], [2.0], [100.0]])
    preds = np.array([[1.5], [2.5], [0.0]])
    mask = np.array([[True], [True], [False]])
    assert metrics.mae(labels, preds, mask)[0] == pytest.approx(0.5)
    assert metrics.rmse(labels, preds, mask)[0] == pytest.approx(0.5)


def test_dispatch_and_is_better():
    assert metrics.compute_metric("mae", [1.0, 2.0], [1.0, 3.0])[0] == 0.5
    with pytest.raises(ValueError):
        metrics.compute_metric("accuracy", [1.0], [1.0])
    assert metrics.is_better("roc_auc", 0.8, 0.7) and not metrics.is_better("rmse", 0.8, 0.7)
    assert metrics.is_better("mae", 0.1, float("nan"))
    assert not metrics.is_better("mae", float("nan"), 0.1)


def test_prc_auc_matches_sklearn(arrays):
    """Against sklearn's auc(recall, precision) of precision_recall_curve, ties included."""
    labels, scores, mask = arrays
    mean, per_task = metrics.prc_auc(labels, scores, mask)
    expected = []
    for t in range(3):
        precision, recall, _ = precision_recall_curve(labels[mask[:, t], t], scores[mask[:, t], t])
        expected.append(auc(recall, precision))
    np.testing.assert_allclose(per_task[:3], expected, rtol=1e-12)
    assert np.isnan(per_task[3])  # One class only.
    assert mean == pytest.approx(np.mean(expected), rel=1e-12)
    # By hand: scores 0.9 (1), 0.8 (0), 0.7 (1): points (0, 1), (1/2, 1), (1/2, 1/2), (1, 2/3).
    hand = metrics.binary_prc_auc(np.array([1, 0, 1]), np.array([0.9, 0.8, 0.7]))
    assert hand == pytest.approx(0.5 * 1.0 + 0.5 * (0.5 + 2 / 3) / 2)
    assert metrics.binary_prc_auc(np.array([0, 1, 1]), np.array([0.1, 0.8, 0.9])) == 1.0


def test_r2_and_spearman_match_sklearn_and_scipy():
    rng = np.random.default_rng(2)
    labels = rng.normal(size=(60, 3))
    preds = 0.7 * labels + rng.normal(scale=0.6, size=(60, 3))
    preds[:, 1] = np.round(preds[:, 1])  # Ties: average ranks.
    mask = rng.random((60, 3)) < 0.75
    mask[:, 2] = False
    labels_nan = np.where(mask, labels, np.nan)
    r2_mean, r2_tasks = metrics.r2(labels_nan, preds, mask)
    rho_mean, rho_tasks = metrics.spearman(labels_nan, preds, mask)
    for t in range(2):
        m = mask[:, t]
        assert r2_tasks[t] == pytest.approx(r2_score(labels[m, t], preds[m, t]), rel=1e-12)
        rho = spearmanr(labels[m, t], preds[m, t]).statistic
        assert rho_tasks[t] == pytest.approx(rho, rel=1e-12)
    assert np.isnan(r2_tasks[2]) and np.isnan(rho_tasks[2])
    assert r2_mean == pytest.approx(np.mean(r2_tasks[:2]))
    assert rho_mean == pytest.approx(np.mean(rho_tasks[:2]))
    assert np.isnan(metrics.r2([1.0, 1.0], [0.0, 2.0])[0])  # Constant targets.


def test_secondary_metrics_sit_beside_the_primary():
    assert metrics.secondary_metrics("roc_auc") == ("prc_auc",)
    assert metrics.secondary_metrics("rmse") == ("mae", "r2", "spearman")
    assert metrics.secondary_metrics("mae") == ("rmse", "r2", "spearman")
    assert metrics.is_better("r2", 0.9, 0.8) and metrics.is_better("prc_auc", 0.5, 0.4)
