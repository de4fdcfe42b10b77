"""Bar chart of the CPU study: test metric (mean +- std over seeds) per data set and init.

python experiments/plot_study.py workdirs/study --out=docs/results_study.png
"""

import json
import pathlib

import matplotlib
from absl import app, flags

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "docs/results_study.png", "Output PNG.")
flags.DEFINE_string("baselines", "benchmarks/rf_baseline", "Folder of RF baseline results.")
INITS = ("scratch", "pretrained", "rf_baseline")


def main(argv):
    study = pathlib.Path(argv[1])
    results = {}
    for path in list(study.glob("*/results.json")) + list(
        pathlib.Path(FLAGS.baselines).glob("*.json")
    ):
        r = json.loads(path.read_text())
        results[(r["dataset"], r["init"])] = r
    datasets = sorted({d for d, _ in results})
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.2 * len(datasets), 3.4))
    for ax, dataset in zip(axes, datasets, strict=True):
        present = [i for i in INITS if (dataset, i) in results]
        means = [results[(dataset, i)]["test_mean"] for i in present]
        stds = [results[(dataset, i)]["test_std"] for i in present]
        ax.bar(present, means, yerr=stds, color=["#999", "#3a7", "#c73"][: len(present)])
        ax.set_title(f"{dataset} ({results[(dataset, present[0])]['metric']})")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(FLAGS.out, dpi=110)


if __name__ == "__main__":
    app.run(main)
