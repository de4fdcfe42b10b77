"""The results.json format shared by fine-tuning and the baselines (read by compare.py)."""

import numpy as np

from moleblend_jax.finetune.catalog import DatasetSpec


def summarize(
    spec: DatasetSpec,
    split_kind: str,
    init: str,
    init_checkpoint: str | None,
    seeds: list[dict],
    config: dict,
    **extra,
) -> dict:
    """Per-seed results (each with "valid" and "test") -> the results.json dict.

    Mean and std (ddof 0) over seeds; `extra` keys go beside the standard ones. Seeds with a
    "test_per_task" dict (task -> metric) also give "test_per_task_mean"; seeds with
    "test_metrics" (metric -> {"mean", "per_task"}: the primary and secondary metrics) give
    "test_metrics": metric -> {"mean", "std" over seeds of the task mean, "per_task": task ->
    mean over seeds}. Seeds without "test" (a search's trials, never scored on test) give no
    test keys at all.
    """
    scored_on_test = all("test" in s for s in seeds)
    test = np.array([s["test"] for s in seeds]) if scored_on_test else None
    valid = np.array([s["valid"] for s in seeds])
    if seeds and all("test_per_task" in s for s in seeds):
        tasks = seeds[0]["test_per_task"]
        extra["test_per_task_mean"] = {
            t: float(np.mean([s["test_per_task"][t] for s in seeds])) for t in tasks
        }
    if seeds and all("test_metrics" in s for s in seeds):
        extra["test_metrics"] = _metrics_over_seeds([s["test_metrics"] for s in seeds])
    return {
        "dataset": spec.name,
        "metric": spec.metric,
        "higher_is_better": spec.higher_is_better,
        "split": split_kind,
        "init": init,
        "init_checkpoint": init_checkpoint,
        **extra,
        "seeds": seeds,
        **(
            {"test_mean": float(test.mean()), "test_std": float(test.std())}
            if test is not None
            else {}
        ),
        "valid_mean": float(valid.mean()),
        "valid_std": float(valid.std()),
        "config": config,
    }


def _metrics_over_seeds(per_seed: list[dict]) -> dict:
    """[{metric: {"mean", "per_task"}}] per seed -> {metric: {"mean", "std", "per_task"}}
    (NaN where a seed could not score the metric, e.g. a task with one class)."""
    summary = {}
    for name in per_seed[0]:
        means = np.array([seed[name]["mean"] for seed in per_seed], np.float64)
        tasks = per_seed[0][name]["per_task"]
        summary[name] = {
            "mean": float(means.mean()),
            "std": float(means.std()),
            "per_task": {
                t: float(np.mean([seed[name]["per_task"][t] for seed in per_seed])) for t in tasks
            },
        }
    return summary
