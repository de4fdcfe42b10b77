"""Plots of the CPU study from its results folder (experiments/study/cpu_study.sh's RESULTS).

  python experiments/study/plot_study.py benchmarks/study --out=docs/results_study.png \
      --curves_out=docs/results_pretrain.png

--out: one panel per data set with results, the test metric (mean +- std over seeds) of
fine-tuning from scratch and from each pretraining variant, the random forest, and (hatched)
the linear probes of a random init and of each variant. --curves_out: the pretraining curves
of each variant (RESULTS/pretrain/<variant>.jsonl): SPD and edge accuracy, 3D direction and
denoising cosines; held-out values dashed; a metric that is 0 throughout (2d's denoising) is
left out, as are missing files.
"""

import json
import pathlib

import matplotlib
from absl import app, flags

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "docs/results_study.png", "Bar chart PNG.")
flags.DEFINE_string("curves_out", None, "Pretraining curves PNG (default: none).")
DATASETS = ("esol", "freesolv", "lipophilicity", "b3db")
RUNS = ("scratch", "blend", "2d", "3d", "rf")  # RESULTS/<set>/<run>.json, solid bars.
PROBES = ("scratch", "blend", "2d", "3d")  # RESULTS/<set>/probe_<run>.json, hatched bars.
COLOURS = {"scratch": "#999", "blend": "#3a7", "2d": "#37c", "3d": "#c73", "rf": "#555"}
CURVES = ("spd_accuracy", "edge_accuracy", "direction_cosine", "denoise_cosine")


def plot_results(study: pathlib.Path, out: str) -> None:
    """One bar panel per data set folder of `study` (see the module docstring)."""
    folders = [study / d for d in DATASETS if any((study / d).glob("*.json"))]
    if not folders:
        raise app.UsageError(f"no data set folder ({', '.join(DATASETS)}) in {study}")
    fig, axes = plt.subplots(1, len(folders), figsize=(3.6 * len(folders), 3.6), squeeze=False)
    for ax, folder in zip(axes[0], folders, strict=True):
        bars = [(run, folder / f"{run}.json", "") for run in RUNS]
        bars += [(run, folder / f"probe_{run}.json", "//") for run in PROBES]
        metric = None
        for position, (run, path, hatch) in enumerate(b for b in bars if b[1].exists()):
            result = json.loads(path.read_text())
            metric = result["metric"]
            ax.bar(
                position,
                result["test_mean"],
                yerr=result["test_std"],
                color=COLOURS[run],
                hatch=hatch,
                edgecolor="white" if hatch else None,
            )
        labels = [path.stem for _, path, _ in bars if path.exists()]
        ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=8)
        ax.set_title(f"{folder.name} (test {metric}; hatched: linear probe)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def plot_curves(study: pathlib.Path, out: str) -> None:
    """Pretraining metrics of every RESULTS/pretrain/<variant>.jsonl against the step."""
    runs = sorted((study / "pretrain").glob("*.jsonl"))
    if not runs:
        raise app.UsageError(f"no pretraining metrics (*.jsonl) in {study / 'pretrain'}")
    fig, axes = plt.subplots(1, len(CURVES), figsize=(3.6 * len(CURVES), 3.2))
    for path in runs:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        colour = COLOURS.get(path.stem)
        for ax, key in zip(axes, CURVES, strict=True):
            for name, style in ((key, "-"), (f"eval_{key}", "--o")):
                points = [(r["step"], r[name]) for r in rows if name in r]
                # All zero: the metric has nothing to measure (2d has no denoising atoms).
                if points and any(value != 0 for _, value in points):
                    steps, values = zip(*points, strict=True)
                    label = path.stem if style == "-" else f"{path.stem} (held out)"
                    ax.plot(steps, values, style, color=colour, label=label, markersize=3)
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("Give the study's results folder (e.g. benchmarks/study).")
    study = pathlib.Path(argv[1])
    plot_results(study, FLAGS.out)
    if FLAGS.curves_out:
        plot_curves(study, FLAGS.curves_out)


if __name__ == "__main__":
    app.run(main)
