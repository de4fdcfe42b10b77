"""The tables of docs/results.md's drug-like study, and its goal, from the results folder.

  python experiments/study/study_tables.py benchmarks/study [--out=FILE.md]

Reads the folder experiments/study/cpu_study.sh writes: <set>/{scratch,blend,2d,3d,rf}.json
(fine-tuning and the forest), <set>/probe_{scratch,blend,2d,3d}.json (linear probes; scratch =
random inits), lr/<set>/<init>_lr<lr>.json (fine-tuning at other peak lrs), pretrain/<variant>
.jsonl (pretraining metrics), <variant>_rerun*/ (a variant pretrained again, with the same
settings or another seed: pretrain.jsonl, probe_<set>.json and, where it was fine-tuned,
finetune_<set>.json) and <variant>_<name>/ with a settings.json of their own (the variant
pretrained with other settings, e.g. a larger corpus; the same files). Prints, in Markdown:
the test metric (mean ± std over seeds) of every init, validation means and best epochs, the
probes, the relative gains over scratch and over random-init probes, the learning-rate
sensitivity, the held-out pretraining metrics, each variant's re-runs and other-settings runs
beside its first run, and the goal of issue 16 decided from the same numbers. A missing file
is a '-' cell.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from absl import app, flags

_OUT = flags.DEFINE_string("out", None, "Also write the Markdown to this file.")

SETS = {"esol": "ESOL", "freesolv": "FreeSolv", "b3db": "B3DB", "lipophilicity": "Lipophilicity"}
VARIANTS = ("blend", "2d", "3d")
INITS = ("scratch", *VARIANTS)
METRICS = {"rmse": "RMSE ↓", "mae": "MAE ↓", "roc_auc": "ROC-AUC ↑"}
PRETRAIN_STEPS = (1000, 2000, 5000, 10000)
PRETRAIN_COLUMNS = {  # metrics.jsonl key (held out) -> column
    "eval_loss": "loss (held out)",
    "eval_spd_accuracy": "SPD accuracy",
    "eval_edge_accuracy": "edge accuracy",
    "eval_direction_cosine": "3D direction cosine",
    "eval_denoise_cosine": "denoising cosine",
}

Study = dict[str, dict[str, dict]]  # set -> run name (file stem) -> results.json


def load_study(folder: Path) -> Study:
    """Every <set>/<run>.json of `folder` for the sets of SETS that have one."""
    study = {}
    for name in SETS:
        runs = {path.stem: json.loads(path.read_text()) for path in (folder / name).glob("*.json")}
        if runs:
            study[name] = runs
    return study


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _score(result: dict | None) -> str:
    if result is None:
        return "-"
    if len(result["seeds"]) == 1:
        return f"{result['test_mean']:.3f}"
    return f"{result['test_mean']:.3f} ± {result['test_std']:.3f}"


def _set_label(name: str, runs: dict) -> str:
    """'B3DB (1,968; 32 skipped: too_many_atoms)' from any run's size and skip counts."""
    some = runs.get("scratch") or next(iter(runs.values()))
    size = some.get("num_molecules") or some.get("num_records")
    skipped = "".join(f"; {n} skipped: {why}" for why, n in some.get("skipped", {}).items())
    return f"{SETS[name]} ({size:,}{skipped})" if size else SETS[name]


def gain(result: dict, reference: dict) -> float:
    """Relative test gain of `result` over `reference` in %, positive = better."""
    sign = 1.0 if result["higher_is_better"] else -1.0
    return 100.0 * sign * (result["test_mean"] - reference["test_mean"]) / reference["test_mean"]


def beats(result: dict, reference: dict) -> bool:
    """Better on test by more than either run's standard deviation over seeds."""
    margin = result["test_mean"] - reference["test_mean"]
    margin = margin if result["higher_is_better"] else -margin
    return margin > max(result["test_std"], reference["test_std"])


def finetune_table(study: Study) -> str:
    header = ["data set", "metric", *INITS, "forest (Morgan)"]
    rows = []
    for name, runs in study.items():
        metric = METRICS[next(iter(runs.values()))["metric"]]
        cells = [_score(runs.get(run)) for run in (*INITS, "rf")]
        rows.append([_set_label(name, runs), metric, *cells])
    return _table(header, rows)


def selection_table(study: Study) -> str:
    """Validation means and each seed's best epoch, per init."""
    header = ["data set", "valid: " + " / ".join(INITS), "best epochs: " + "; ".join(INITS)]
    rows = []
    for name, runs in study.items():
        valid = [f"{runs[i]['valid_mean']:.3f}" if i in runs else "-" for i in INITS]
        epochs = [
            "/".join(str(seed["best_epoch"]) for seed in runs[i]["seeds"]) if i in runs else "-"
            for i in INITS
        ]
        rows.append([SETS[name], " / ".join(valid), "; ".join(epochs)])
    return _table(header, rows)


def probe_table(study: Study) -> str:
    header = ["data set", "metric", "probe: random init", *(f"probe: {v}" for v in VARIANTS)]
    rows = []
    for name, runs in study.items():
        metric = METRICS[next(iter(runs.values()))["metric"]]
        rows.append([SETS[name], metric, *(_score(runs.get(f"probe_{i}")) for i in INITS)])
    return _table(header, rows)


def gains(study: Study, prefix: str = "") -> dict[str, dict[str, float]]:
    """variant -> set -> gain % of `prefix + variant` over `prefix + 'scratch'` where both ran."""
    return {
        variant: {
            name: gain(runs[prefix + variant], runs[prefix + "scratch"])
            for name, runs in study.items()
            if prefix + variant in runs and prefix + "scratch" in runs
        }
        for variant in VARIANTS
    }


def gain_table(study: Study, title: str, prefix: str = "") -> str:
    by_variant = gains(study, prefix)
    rows = [
        [
            SETS[name],
            *(f"{by_variant[v][name]:+.1f}" if name in by_variant[v] else "-" for v in VARIANTS),
        ]
        for name in study
    ]
    means = [
        f"{statistics.fmean(g.values()):+.1f} ({len(g)})" if g else "-" for g in by_variant.values()
    ]
    return _table([title, *VARIANTS], rows + [["mean over sets", *means]])


def goal(study: Study) -> str:
    """Issue 16's goal: blend beats scratch on >= 3 of the 4 sets by more than the seeds' std,
    and blending beats each single-modality variant in mean gain over scratch."""
    ran = [name for name, runs in study.items() if {"blend", "scratch"} <= runs.keys()]
    wins = [SETS[name] for name in ran if beats(study[name]["blend"], study[name]["scratch"])]
    by_variant = gains(study)
    lines = [
        f"- blend beats scratch by more than the seeds' std on {len(wins)} of {len(ran)} sets "
        f"({', '.join(wins) or 'none'}); the goal needs 3 of 4.",
    ]
    singles_beaten = True
    for single in ("2d", "3d"):
        common = by_variant["blend"].keys() & by_variant[single].keys()
        if not common:
            singles_beaten = False
            continue
        blend, other = (
            statistics.fmean(by_variant[v][n] for n in common) for v in ("blend", single)
        )
        singles_beaten &= blend > other
        lines.append(
            f"- blend {'beats' if blend > other else 'does not beat'} {single} on average: "
            f"mean gain over scratch on the {len(common)} sets both ran {blend:+.1f}% "
            f"against {other:+.1f}%."
        )
    met = len(wins) >= 3 and singles_beaten
    return "\n".join(lines + [f"- goal {'met' if met else 'not met'}."])


def lr_table(folder: Path, study: Study) -> str:
    """Test metric and best epochs per peak lr, for each (set, init) of lr/: the lr/ runs and
    the study's own run (at configs/finetune.py:small's lr)."""
    rows, lrs = {}, set()
    for path in sorted(folder.glob("lr/*/*_lr*.json")):
        name, (init, lr) = path.parent.name, path.stem.rsplit("_lr", 1)
        by_lr = rows.setdefault((name, init), {})
        by_lr[float(lr)] = json.loads(path.read_text())
        main = study.get(name, {}).get(init)
        if main is not None:
            by_lr[main["config"]["optimizer"]["peak_lr"]] = main
        lrs |= by_lr.keys()

    def cell(result):
        epochs = "/".join(str(seed["best_epoch"]) for seed in result["seeds"])
        return f"{_score(result)} (best epochs {epochs})"

    if not rows:
        return "No runs under lr/."
    rank = {key: i for i, key in enumerate([*SETS, *INITS])}
    order = sorted(lrs)
    body = [
        [SETS.get(name, name), init, *(cell(by_lr[lr]) if lr in by_lr else "-" for lr in order)]
        for (name, init), by_lr in sorted(
            rows.items(), key=lambda i: [rank.get(k, len(rank)) for k in i[0]]
        )
    ]
    return _table(["data set", "init", *(f"peak lr {lr:g}" for lr in order)], body)


def _held_out(path: Path) -> dict[int, dict]:
    """step -> the metrics.jsonl row with held-out (eval_*) metrics; {} if there is no file."""
    if not path.exists():
        return {}
    rows = map(json.loads, path.read_text().splitlines())
    return {row["step"]: row for row in rows if "eval_loss" in row}


def _held_out_cell(row: dict, key: str) -> str:
    # A variant without denoising input logs 0 for it: shown as '-'.
    return f"{row[key]:.3f}" if row.get(key) else "-"


def pretrain_table(folder: Path) -> str:
    """Held-out pretraining metrics of each variant at PRETRAIN_STEPS."""
    rows = []
    for variant in VARIANTS:
        held_out = _held_out(folder / "pretrain" / f"{variant}.jsonl")
        for step in (s for s in PRETRAIN_STEPS if s in held_out):
            cells = [_held_out_cell(held_out[step], key) for key in PRETRAIN_COLUMNS]
            rows.append([f"`{variant}`", f"{step:,}", *cells])
    return _table(["variant", "step", *PRETRAIN_COLUMNS.values()], rows)


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _runs_row(
    label: str, results: list[dict | None], reference: dict | None, pooled: bool
) -> list[str]:
    """label, each run's score, (`pooled`) their mean ± std over two or more runs, the
    reference's score."""
    scores = [result["test_mean"] for result in results if result is not None]
    spread = ["-"] if pooled else []
    if pooled and len(scores) > 1:
        spread = [f"{statistics.fmean(scores):.3f} ± {statistics.pstdev(scores):.3f}"]
    return [label, *map(_score, results), *spread, _score(reference)]


def _other_settings(folder: Path, run: Path) -> str:
    """The settings.json keys of `run` that differ from the study's, as `key value` pairs."""
    study, own = _load(folder / "settings.json") or {}, _load(run / "settings.json") or {}
    changed = {key: value for key, value in own.items() if study.get(key) != value}
    return ", ".join(
        f"{key} {value:,}" if isinstance(value, int) else f"{key} {value}"
        for key, value in changed.items()
    )


def runs_table(folder: Path, study: Study, variant: str, runs: list[Path], pooled: bool) -> str:
    """A variant's first run beside other pretraining runs of it (folders with pretrain.jsonl,
    probe_<set>.json and, where fine-tuned, finetune_<set>.json): the held-out pretraining
    metrics, every probe's test score and the fine-tuned ones, with the random-init probe /
    scratch run for reference. Re-runs with the study's settings (`pooled`) are compared at
    their last common step and summarised by the mean ± std over the runs; runs with other
    settings (their own settings.json) at each run's last step, with what they changed."""
    held_out = [_held_out(folder / "pretrain" / f"{variant}.jsonl")]
    held_out += [_held_out(run / "pretrain.jsonl") for run in runs]
    rows = []
    if pooled:
        if common := set.intersection(*(set(run) for run in held_out)):
            step = max(common)
            for key, column in PRETRAIN_COLUMNS.items():
                cells = [_held_out_cell(run[step], key) for run in held_out]
                rows.append([f"{column} at step {step:,}", *cells, "-", "-"])
    else:
        rows.append(["settings", "the study's", *(_other_settings(folder, r) for r in runs), "-"])
        last = [run[max(run)] if run else {} for run in held_out]
        rows.append(["last held-out step", *(f"{r['step']:,}" if r else "-" for r in last), "-"])
        for key, column in PRETRAIN_COLUMNS.items():
            rows.append([f"{column} at it", *(_held_out_cell(r, key) for r in last), "-"])
    for name, results in study.items():
        label = f"{SETS[name]} {METRICS[next(iter(results.values()))['metric']]}"
        probes = [results.get(f"probe_{variant}")]
        probes += [_load(run / f"probe_{name}.json") for run in runs]
        rows.append(_runs_row(f"probe, {label}", probes, results.get("probe_scratch"), pooled))
        tuned = [_load(run / f"finetune_{name}.json") for run in runs]
        if any(tuned):
            tuned = [results.get(variant), *tuned]
            rows.append(_runs_row(f"fine-tuned, {label}", tuned, results.get("scratch"), pooled))
    names = [f"`{variant}`", *(f"`{run.name}`" for run in runs)]
    spread = ["runs: mean ± std"] if pooled else []
    return _table(["measure", *names, *spread, "random init / scratch"], rows)


def _reruns(folder: Path, variant: str) -> list[Path]:
    """<variant>_rerun*/: the variant pretrained again with the study's settings."""
    return sorted(folder.glob(f"{variant}_rerun*/"))


def _other_runs(folder: Path, variant: str) -> list[Path]:
    """<variant>_*/ with a settings.json of their own: the variant with other settings."""
    runs = sorted(path.parent for path in folder.glob(f"{variant}_*/settings.json"))
    reruns = set(_reruns(folder, variant))
    return [run for run in runs if run not in reruns]


def study_tables(folder: Path) -> str:
    study = load_study(folder)
    if not study:
        raise app.UsageError(f"no results of {', '.join(SETS)} under {folder}")
    sections = [
        ("Test metric at the best validation epoch (mean ± std over seeds)", finetune_table(study)),
        ("Validation metric (mean over seeds) and each seed's best epoch", selection_table(study)),
        ("Linear probes on frozen encoders (test)", probe_table(study)),
        ("Fine-tuned vs scratch, test gain %", gain_table(study, "fine-tuned vs scratch: gain %")),
        ("Probe vs random-init probe, test gain %", gain_table(study, "probe gain %", "probe_")),
        ("Learning-rate sensitivity (test)", lr_table(folder, study)),
        ("Pretraining, held out", pretrain_table(folder)),
        *(
            (f"`{v}` pretrained again", runs_table(folder, study, v, runs, pooled=True))
            for v in VARIANTS
            if (runs := _reruns(folder, v))
        ),
        *(
            (f"`{v}` with other pretraining settings", runs_table(folder, study, v, runs, False))
            for v in VARIANTS
            if (runs := _other_runs(folder, v))
        ),
        ("Goal (issue 16)", goal(study)),
    ]
    return "\n\n".join(f"### {title}\n\n{body}" for title, body in sections) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise app.UsageError("usage: study_tables.py RESULTS_FOLDER [--out=FILE.md]")
    text = study_tables(Path(argv[1]))
    sys.stdout.write(text)
    if _OUT.value:
        Path(_OUT.value).write_text(text)


if __name__ == "__main__":
    app.run(main)
