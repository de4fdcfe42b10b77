"""Masked multi-task evaluation metrics (SPEC 7): ROC-AUC, RMSE, MAE as primary metrics and,
beside them, PRC-AUC (classification), R², MAE, RMSE and Spearman's rho (regression). Pure numpy.

Every metric takes ``labels`` [M, T], predictions [M, T] and a boolean ``mask`` [M, T] (False for
missing labels and padding) and returns ``(mean over scored tasks, per-task list)``; a task that
cannot be scored is NaN in the list and left out of the mean.
"""

from __future__ import annotations

import numpy as np

HIGHER_IS_BETTER = {
    "roc_auc": True,
    "rmse": False,
    "mae": False,
    "prc_auc": True,
    "r2": True,
    "spearman": True,
}
# What results.json reports beside a data set's primary metric (`secondary_metrics`).
CLASSIFICATION_METRICS = ("roc_auc", "prc_auc")
REGRESSION_METRICS = ("rmse", "mae", "r2", "spearman")


def _as_2d(labels, preds, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64)
    preds = np.asarray(preds, dtype=np.float64)
    if labels.ndim == 1:
        labels, preds = labels[:, None], preds.reshape(-1, 1)
    if mask is None:
        mask = ~np.isnan(labels)
    mask = np.asarray(mask, dtype=bool).reshape(labels.shape)
    if preds.shape != labels.shape:
        raise ValueError(f"predictions {preds.shape} and labels {labels.shape} differ in shape.")
    # NaN labels are never scored, whatever the mask says.
    return labels, preds, mask & ~np.isnan(labels)


def _mean_of_scored(per_task: list[float]) -> float:
    scored = [v for v in per_task if not np.isnan(v)]
    return float(np.mean(scored)) if scored else float("nan")


def average_ranks(values: np.ndarray) -> np.ndarray:
    """[n] -> [n] float64 ranks 1..n, tied values sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    run_ranks = (starts + ends + 1) / 2.0  # Mean of ranks starts+1 .. ends.
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(run_ranks, ends - starts)
    return ranks


def binary_roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """[n] 0/1 labels, [n] scores -> ROC-AUC (Mann-Whitney U; ties count 1/2, as sklearn)."""
    positive = labels > 0.5
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(np.asarray(scores, dtype=np.float64))
    u_statistic = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u_statistic / (n_pos * n_neg))


def roc_auc(labels, scores, mask=None) -> tuple[float, list[float]]:
    """[M, T] 0/1 labels, [M, T] scores (logits or probabilities), [M, T] mask -> ROC-AUC.

    Returns (mean over tasks that have both classes among masked-in rows, per-task list with NaN
    for tasks skipped). ``mask`` None means "every non-NaN label".
    """
    labels, scores, mask = _as_2d(labels, scores, mask)
    per_task = [
        binary_roc_auc(labels[mask[:, t], t], scores[mask[:, t], t]) for t in range(labels.shape[1])
    ]
    return _mean_of_scored(per_task), per_task


def rmse(labels, preds, mask=None) -> tuple[float, list[float]]:
    """[M, T] targets, [M, T] predictions, [M, T] mask -> (mean of per-task RMSE, per-task)."""
    labels, preds, mask = _as_2d(labels, preds, mask)
    per_task = []
    for t in range(labels.shape[1]):
        err = preds[mask[:, t], t] - labels[mask[:, t], t]
        per_task.append(float(np.sqrt(np.mean(err**2))) if err.size else float("nan"))
    return _mean_of_scored(per_task), per_task


def mae(labels, preds, mask=None) -> tuple[float, list[float]]:
    """[M, T] targets, [M, T] predictions, [M, T] mask -> (mean of per-task MAE, per-task)."""
    labels, preds, mask = _as_2d(labels, preds, mask)
    per_task = []
    for t in range(labels.shape[1]):
        err = preds[mask[:, t], t] - labels[mask[:, t], t]
        per_task.append(float(np.mean(np.abs(err))) if err.size else float("nan"))
    return _mean_of_scored(per_task), per_task


def binary_prc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """[n] 0/1 labels, [n] scores -> area under the precision-recall curve, trapezoidal from
    (recall 0, precision 1) over one point per distinct score (sklearn's
    `auc(recall, precision)` of `precision_recall_curve`, chemprop's "prc"); NaN without both
    classes."""
    positive = np.asarray(labels) > 0.5
    n_pos = int(positive.sum())
    if n_pos == 0 or n_pos == positive.size:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    sorted_scores, hits = np.asarray(scores, np.float64)[order], positive[order]
    # The last position of each run of equal scores: one threshold each.
    ends = np.r_[np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]), hits.size - 1]
    true_pos = np.cumsum(hits)[ends]
    precision = np.r_[1.0, true_pos / (ends + 1)]
    recall = np.r_[0.0, true_pos / n_pos]
    return float(np.sum(np.diff(recall) * (precision[1:] + precision[:-1]) / 2.0))


def prc_auc(labels, scores, mask=None) -> tuple[float, list[float]]:
    """[M, T] 0/1 labels, [M, T] scores, [M, T] mask -> PRC-AUC (`binary_prc_auc`), mean over
    the tasks with both classes and per task."""
    labels, scores, mask = _as_2d(labels, scores, mask)
    per_task = [
        binary_prc_auc(labels[mask[:, t], t], scores[mask[:, t], t]) for t in range(labels.shape[1])
    ]
    return _mean_of_scored(per_task), per_task


def _per_task(labels, preds, mask, score) -> tuple[float, list[float]]:
    """`score(targets [n], predictions [n])` per task over its masked-in rows (NaN: none)."""
    labels, preds, mask = _as_2d(labels, preds, mask)
    per_task = [
        score(labels[mask[:, t], t], preds[mask[:, t], t]) if mask[:, t].any() else float("nan")
        for t in range(labels.shape[1])
    ]
    return _mean_of_scored(per_task), per_task


def _r2(targets: np.ndarray, predictions: np.ndarray) -> float:
    total = np.sum((targets - targets.mean()) ** 2)
    if total == 0.0:
        return float("nan")  # Constant targets: R² is undefined.
    return float(1.0 - np.sum((targets - predictions) ** 2) / total)


def _spearman(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Pearson's r of the average ranks (ties share their rank, as scipy.stats.spearmanr)."""
    a, b = average_ranks(targets), average_ranks(predictions)
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt(np.sum(a**2) * np.sum(b**2))
    return float(np.sum(a * b) / norm) if norm > 0 else float("nan")


def r2(labels, preds, mask=None) -> tuple[float, list[float]]:
    """[M, T] targets, [M, T] predictions, [M, T] mask -> (mean of per-task R², per-task)."""
    return _per_task(labels, preds, mask, _r2)


def spearman(labels, preds, mask=None) -> tuple[float, list[float]]:
    """[M, T] targets, [M, T] predictions, [M, T] mask -> (mean of per-task Spearman's rho,
    per-task)."""
    return _per_task(labels, preds, mask, _spearman)


METRICS = {
    "roc_auc": roc_auc,
    "rmse": rmse,
    "mae": mae,
    "prc_auc": prc_auc,
    "r2": r2,
    "spearman": spearman,
}


def secondary_metrics(primary: str) -> tuple[str, ...]:
    """The metrics reported beside `primary`: PRC-AUC for ROC-AUC; R², Spearman and the other
    of RMSE / MAE for an error."""
    family = CLASSIFICATION_METRICS if primary == "roc_auc" else REGRESSION_METRICS
    return tuple(name for name in family if name != primary)


def compute_metric(name: str, labels, preds, mask=None) -> tuple[float, list[float]]:
    """Dispatches to a metric of ``METRICS`` by name."""
    if name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}; known: {sorted(METRICS)}.")
    return METRICS[name](labels, preds, mask)


def is_better(name: str, candidate: float, incumbent: float) -> bool:
    """True when ``candidate`` beats ``incumbent`` under metric ``name`` (NaN never wins)."""
    if np.isnan(candidate):
        return False
    if np.isnan(incumbent):
        return True
    return candidate > incumbent if HIGHER_IS_BETTER[name] else candidate < incumbent
