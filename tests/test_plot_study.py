"""experiments/study/plot_study.py: the study's bar chart and pretraining curves from a results
folder laid out as experiments/study/cpu_study.sh writes it."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_plots_a_results_folder(tmp_path):
    results = tmp_path / "results"
    for dataset, metric in (("esol", "rmse"), ("b3db", "roc_auc")):
        (results / dataset).mkdir(parents=True)
        for run in ("scratch", "blend", "rf", "probe_scratch", "probe_blend"):
            summary = dict(dataset=dataset, metric=metric, test_mean=0.8, test_std=0.05)
            (results / dataset / f"{run}.json").write_text(json.dumps(summary))
    (results / "lipophilicity").mkdir()  # Made by cpu_study.sh before its first result.
    (results / "pretrain").mkdir()
    for variant in ("blend", "2d"):
        rows = [
            dict(step=s, spd_accuracy=0.1 * s, edge_accuracy=0.2, direction_cosine=0.01,
                 denoise_cosine=0.0 if variant == "2d" else 0.1)
            for s in (1, 2)
        ]  # fmt: skip
        rows[-1]["eval_spd_accuracy"] = 0.15
        lines = "".join(json.dumps(r) + "\n" for r in rows)
        (results / "pretrain" / f"{variant}.jsonl").write_text(lines)
    bars, curves = tmp_path / "bars.png", tmp_path / "curves.png"
    subprocess.run(
        [sys.executable, str(REPO / "experiments" / "study" / "plot_study.py"), str(results),
         f"--out={bars}", f"--curves_out={curves}"],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True, timeout=300,
    )  # fmt: skip
    for png in (bars, curves):
        assert png.read_bytes()[:4] == b"\x89PNG"
    # One 3.6-inch panel per data set with results at 110 dpi: esol and b3db, no empty one.
    assert int.from_bytes(bars.read_bytes()[16:20], "big") == round(2 * 3.6 * 110)
