"""Fine-tuning results as Markdown tables: next to the published MoleBLEND numbers (SPEC 8),
the other test metrics (PRC-AUC; RMSE, MAE, R², Spearman) per data set and task, and MUBen's
3-seed re-runs of Uni-Mol and GROVER as reference rows (`moleblend compare` prints them).

Each results.json is written by moleblend finetune (or experiments/baseline_rf.py):
  {"dataset", "metric", "higher_is_better", "split", "init", "init_checkpoint", "seeds": [...],
   "test_mean", "test_std", "valid_mean", "valid_std", "config": {...}}
ROC-AUC is stored as a fraction and shown in %. Optional keys that add protocol notes:
"num_molecules" (data set size; in "config", at any depth), "pretrain_molecules" and
"pretrain_steps" (anywhere, e.g. finetune.py's "pretrain" block); "test_metrics" (metric ->
{"mean", "std", "per_task"}) for the second table.
A pretrained row's init names its pretraining run (the workdir of "init_checkpoint"), so runs
from different checkpoints (e.g. the study's blend / 2d / 3d) are told apart and averaged
apart; a note counts the seeds whose best validation epoch was the last one run (under-trained).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from moleblend_jax.errors import UserError
from moleblend_jax.finetune import published
from moleblend_jax.finetune.catalog import DATASETS

HEADER = (
    "| dataset | metric | init | split | seeds | ours (test, mean ± std) | MoleBLEND (SPEC 8) "
    "| ours - MoleBLEND | protocol differences |"
)
SEPARATOR = "|---|---|---|---|---|---|---|---|---|"
METRIC_LABELS = {"roc_auc": "ROC-AUC %", "rmse": "RMSE", "mae": "MAE"}
INIT_NOTES = {
    "scratch": "no pretraining (random init)",
    "rf_baseline": "Morgan-FP random forest, no pretraining",
    "linear_probe": "ridge / logistic regression on frozen graph embeddings",
}
PRETRAINED_PREFIX = (
    "pretrained:"  # init_checkpoint of a shipped encoder (moleblend_jax.pretrained).
)
SIZE_TOLERANCE = 0.02  # Relative difference in data set size worth a note.

LEGEND = """\
Notes
- MoleBLEND numbers are the per-data-set test ROC-AUC (%) of SPEC 8 (marked unverified there;
  the average {avg} is corroborated by a third-party source). SPEC gives no MoleBLEND numbers for
  the regression sets (ESOL, FreeSolv, Lipophilicity) or QM9: shown as '-'.
- Hyperparameters: the original tuned {trials} Bayesian-optimisation trials per data set and
  selected on the test set; ours uses one fixed configuration and selects the epoch on the
  validation set only, so our numbers are not optimistically biased the same way.
- B3DB (bundled) is a BBBP-like superset from many sources, not BBBP: not comparable with the
  BBBP number, which is shown in parentheses for orientation only.
- Original pretraining: {pre_mols:,} PCQM4Mv2 molecules, {pre_steps:,} steps x batch {pre_batch}
  (SPEC 6); a different budget is noted per row when the results' config records it.
"""


def load_results(paths: Iterable[str | Path]) -> list[dict]:
    """Reads results.json files; UserError (a ValueError) for a file that is missing, not JSON
    or lacks a required key."""
    required = ("dataset", "metric", "init", "split", "seeds", "test_mean", "test_std")
    results = []
    for path in paths:
        try:
            with open(path) as handle:
                result = json.load(handle)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: not a readable results.json ({err})") from None
        missing = [key for key in required if key not in result]
        if missing:
            raise UserError(f"{path}: missing keys {missing}.")
        results.append(result)
    return results


def _find_key(tree, key: str):
    """First value stored under ``key`` at any depth of nested dicts, else None."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for value in tree.values():
            found = _find_key(value, key)
            if found is not None:
                return found
    return None


def format_score(metric: str, mean: float, std: float | None = None) -> str:
    """'73.0 ± 1.2' for ROC-AUC fractions (shown in %), '0.612 ± 0.020' for errors."""
    scale, digits = (100.0, 1) if metric == "roc_auc" else (1.0, 3)
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "nan"
    text = f"{mean * scale:.{digits}f}"
    if std is not None:
        text += f" ± {std * scale:.{digits}f}"
    return text


def init_label(result: dict) -> str:
    """The init, with its checkpoint's pretraining run for a fine-tuned or probed checkpoint:
    'pretrained: RUN', 'linear_probe: RUN' (RUN the workdir of init_checkpoint
    WORKDIR[/checkpoints[/STEP]]); 'linear_probe' alone probes a random init."""
    checkpoint = result.get("init_checkpoint")
    if result["init"] not in ("pretrained", "linear_probe") or not checkpoint:
        return result["init"]
    if checkpoint.startswith(PRETRAINED_PREFIX):  # A shipped encoder: its name.
        return f"{result['init']}: {checkpoint[len(PRETRAINED_PREFIX) :]}"
    parts = [p for p in Path(checkpoint).parts if p not in ("/", ".")]
    while parts and (parts[-1].isdigit() or parts[-1] == "checkpoints"):
        parts.pop()
    return f"{result['init']}: {parts[-1]}" if parts else result["init"]


def _last_epoch_best(result: dict) -> str | None:
    """'best epoch = last run in K of N seeds' when a seed's best validation epoch is the last
    one it ran (no early stop: more epochs would likely help); None otherwise."""
    seeds = result["seeds"]
    last = [s for s in seeds if s.get("best_epoch", 0) > 0 and s["best_epoch"] == s["epochs_run"]]
    return f"best epoch = last run in {len(last)} of {len(seeds)} seeds" if last else None


def protocol_notes(result: dict) -> list[str]:
    """Short phrases for every way this run's protocol differs from the published one."""
    name = result["dataset"].lower()
    config = result.get("config") or {}
    notes = []
    if name == "b3db":
        notes.append("not comparable: B3DB is not BBBP")
    elif name not in published.MOLEBLEND_ROC_AUC:
        notes.append("no published MoleBLEND number")
    else:
        trials = published.ORIGINAL_TUNING_TRIALS
        notes.append(f"selected on valid (orig.: tuned on test, {trials} trials)")
    spec = DATASETS.get(name)
    if result["split"] == "files":
        notes.append("Uni-Mol's split files (the original's)")
    elif spec is not None and result["split"] != spec.default_split:
        notes.append(f"split {result['split']} (orig. {spec.default_split})")
    if result["init"] in INIT_NOTES:
        notes.append(INIT_NOTES[result["init"]])
    elif result["init"] == "pretrained":
        molecules = _find_key(result, "pretrain_molecules")
        steps = _find_key(result, "pretrain_steps")
        if molecules is None and steps is None:
            notes.append("pretraining budget not recorded")
        elif (
            molecules != published.ORIGINAL_PRETRAIN_MOLECULES
            or steps != published.ORIGINAL_PRETRAIN_STEPS
        ):
            notes.append(
                f"pretrained on {_count(molecules)} mols x {_count(steps)} steps "
                f"(orig. {_count(published.ORIGINAL_PRETRAIN_MOLECULES)} x "
                f"{_count(published.ORIGINAL_PRETRAIN_STEPS)})"
            )
    if last := _last_epoch_best(result):
        notes.append(last)
    size = _find_key(config, "num_molecules")
    reference = published.MOLECULENET_SIZES.get(name)
    if size is not None and reference and abs(size - reference) > SIZE_TOLERANCE * reference:
        notes.append(f"{size} molecules (usual {reference})")
    return notes


def _count(value) -> str:
    """3378606 -> '3.38M', 200000 -> '200k', None -> '?'."""
    if value is None:
        return "?"
    value = float(value)
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:g}"


def table_row(result: dict) -> str:
    """One Markdown table row for one results.json."""
    name = result["dataset"].lower()
    metric = result["metric"]
    ours = format_score(metric, result["test_mean"], result["test_std"])
    reference = published.MOLEBLEND_ROC_AUC.get(name)
    if name == "b3db":
        published_text = f"({published.MOLEBLEND_ROC_AUC['bbbp']:.1f} BBBP)"
        diff_text = "n/c"
    elif reference is not None and metric == "roc_auc":
        published_text = f"{reference:.1f}"
        diff_text = f"{100.0 * result['test_mean'] - reference:+.1f}"
    else:
        published_text, diff_text = "-", "-"
    cells = [
        name,
        METRIC_LABELS.get(metric, metric),
        init_label(result),
        result["split"],
        str(len(result["seeds"])),
        ours,
        published_text,
        diff_text,
        "; ".join(protocol_notes(result)),
    ]
    return "| " + " | ".join(cells) + " |"


def _order(result: dict) -> tuple[int, str, str]:
    names = list(DATASETS)
    name = result["dataset"].lower()
    return (names.index(name) if name in names else len(names), name, init_label(result))


def average_rows(results: Sequence[dict]) -> list[str]:
    """An 'avg' row per init that has all eight published classification sets."""
    rows = []
    for init in sorted({init_label(r) for r in results}):
        chosen = [r for r in results if init_label(r) == init and r["split"] == "scaffold"]
        by_name = {r["dataset"].lower(): r for r in chosen}
        if not all(name in by_name for name in published.MOLEBLEND_ROC_AUC):
            continue
        ours = sum(100.0 * by_name[n]["test_mean"] for n in published.MOLEBLEND_ROC_AUC) / len(
            published.MOLEBLEND_ROC_AUC
        )
        reference = published.MOLEBLEND_ROC_AUC_AVERAGE
        rows.append(
            f"| avg (8 cls.) | ROC-AUC % | {init} | scaffold | - | {ours:.1f} | {reference:.1f} "
            f"| {ours - reference:+.1f} | mean of the rows above |"
        )
    return rows


# The metrics of results.json's "test_metrics" (primary and secondary), in table order.
ALL_METRICS = ("roc_auc", "prc_auc", "rmse", "mae", "r2", "spearman")
ALL_METRIC_LABELS = {
    "roc_auc": "ROC-AUC %",
    "prc_auc": "PRC-AUC %",
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R²",
    "spearman": "Spearman",
}
PER_TASK_LIMIT = 30  # Data sets with more tasks (ToxCast's 617) list theirs in results.json only.


def _metric_cell(name: str, mean: float, std: float | None = None) -> str:
    percent = name in ("roc_auc", "prc_auc")
    if mean is None or math.isnan(mean):
        return "nan"
    scale, digits = (100.0, 1) if percent else (1.0, 3)
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if std is not None else "")


def metrics_rows(result: dict) -> list[str]:
    """Rows of the test-metrics table for one results.json with "test_metrics": the mean over
    tasks (± std over seeds), then one row per task (mean over seeds)."""
    scored = result.get("test_metrics")
    if not scored:
        return []
    head = [result["dataset"].lower(), init_label(result)]
    names = [n for n in ALL_METRICS if n in scored]
    mean_cells = [
        _metric_cell(n, scored[n]["mean"], scored[n]["std"]) if n in scored else "-"
        for n in ALL_METRICS
    ]
    rows = ["| " + " | ".join([*head, "mean over tasks", *mean_cells]) + " |"]
    tasks = list(scored[names[0]]["per_task"]) if names else []
    if len(tasks) > PER_TASK_LIMIT:
        note = f"{len(tasks)} tasks: per task in results.json"
        rows.append("| " + " | ".join([*head, note, *["-"] * len(ALL_METRICS)]) + " |")
    elif len(tasks) > 1:
        for task in tasks:
            cells = [
                _metric_cell(n, scored[n]["per_task"][task]) if n in scored else "-"
                for n in ALL_METRICS
            ]
            rows.append("| " + " | ".join([*head, task, *cells]) + " |")
    return rows


def metrics_table(results: Sequence[dict]) -> list[str]:
    """The primary and secondary test metrics of every result that has them (fine-tuning runs
    since PRC-AUC / R² / Spearman were added), per data set and per task."""
    rows = [row for result in results for row in metrics_rows(result)]
    if not rows:
        return []
    labels = " | ".join(ALL_METRIC_LABELS[n] for n in ALL_METRICS)
    return [
        "Test metrics beside the primary one (mean ± std over seeds; per task: mean over seeds)",
        "",
        f"| dataset | init | task | {labels} |",
        "|---" * (3 + len(ALL_METRICS)) + "|",
        *rows,
        "",
        "",
    ]


def reference_table(results: Sequence[dict]) -> list[str]:
    """MUBen's 3-seed re-runs of Uni-Mol and GROVER (published.MUBEN_*) for the data sets of
    `results`: reference runs by a third party, not the papers' numbers."""
    names = sorted({r["dataset"].lower() for r in results} & set(published.MUBEN_UNIMOL))
    if not names:
        return []
    rows = []
    for name in names:
        metric = "ROC-AUC %" if name in published.MOLEBLEND_ROC_AUC else "RMSE"
        digits = 1 if metric == "ROC-AUC %" else 3
        cells = [
            f"{mean:.{digits}f} ± {std:.{digits}f}"
            for mean, std in (published.MUBEN_UNIMOL[name], published.MUBEN_GROVER[name])
        ]
        rows.append(f"| {name} | {metric} | {cells[0]} | {cells[1]} |")
    return [
        f"Reference re-runs, not the papers' numbers: {published.MUBEN_SOURCE}",
        "",
        "| dataset | metric | Uni-Mol (MUBen re-run) | GROVER (MUBen re-run) |",
        "|---|---|---|---|",
        *rows,
        "",
        "",
    ]


def render_markdown(results: Sequence[dict]) -> str:
    """The comparison table, the other test metrics, MUBen's reference re-runs and the
    legend, as Markdown."""
    ordered = sorted(results, key=_order)
    lines = [HEADER, SEPARATOR, *(table_row(r) for r in ordered), *average_rows(ordered), "", ""]
    lines += metrics_table(ordered) + reference_table(ordered)
    legend = LEGEND.format(
        avg=published.MOLEBLEND_ROC_AUC_AVERAGE,
        trials=published.ORIGINAL_TUNING_TRIALS,
        pre_mols=published.ORIGINAL_PRETRAIN_MOLECULES,
        pre_steps=published.ORIGINAL_PRETRAIN_STEPS,
        pre_batch=published.ORIGINAL_PRETRAIN_BATCH,
    )
    return "\n".join(lines) + legend
