"""experiments/study/study_tables.py: docs/results.md's tables and the goal from a results
folder laid out as experiments/study/cpu_study.sh writes it, on hand-checked numbers."""

import json

from script_testing import run_experiment


def _result(metric, means_and_stds, best_epochs=(5,)):
    mean, std = means_and_stds
    seeds = [dict(seed=s, best_epoch=e) for s, e in enumerate(best_epochs)]
    return dict(
        metric=metric, higher_is_better=metric == "roc_auc", test_mean=mean, test_std=std,
        valid_mean=mean + 0.01, num_molecules=100, skipped={}, seeds=seeds,
        config=dict(optimizer=dict(peak_lr=1e-4)),
    )  # fmt: skip


# set -> (metric, init -> (test mean, test std)): blend, 2d, 3d against scratch, and a forest.
STUDY = {
    "esol": ("rmse", {"scratch": (1.0, 0.1), "blend": (0.8, 0.05), "2d": (1.1, 0.0),
                      "3d": (0.9, 0.2), "rf": (1.5, 0.01)}),
    "b3db": ("roc_auc", {"scratch": (0.70, 0.02), "blend": (0.77, 0.01), "2d": (0.63, 0.0),
                         "3d": (0.91, 0.0)}),
}  # fmt: skip


def _write_study(folder, study=STUDY):
    """The runs of `study`, probes on ESOL and 2d's pretraining metrics."""
    for name, (metric, inits) in study.items():
        (folder / name).mkdir(parents=True)
        for init, score in inits.items():
            result = _result(metric, score, best_epochs=(7, 9, 11))
            (folder / name / f"{init}.json").write_text(json.dumps(result))
    (folder / "esol" / "probe_scratch.json").write_text(
        json.dumps(_result("rmse", (1.0, 0.02), best_epochs=(0, 0, 0)))
    )
    (folder / "esol" / "probe_blend.json").write_text(json.dumps(_result("rmse", (0.9, 0.0))))
    (folder / "lr" / "esol").mkdir(parents=True)
    for run, score in (("scratch_lr3e-5", (1.2, 0.1)), ("blend_lr3e-4", (0.7, 0.0))):
        result = _result("rmse", score, best_epochs=(3, 4))
        (folder / "lr" / "esol" / f"{run}.json").write_text(json.dumps(result))
    (folder / "pretrain").mkdir()
    rows = [
        dict(step=50, loss=6.0),
        dict(step=1000, eval_loss=5.0, eval_spd_accuracy=0.25, eval_edge_accuracy=0.5,
             eval_direction_cosine=0.125, eval_denoise_cosine=0.0),
    ]  # fmt: skip
    (folder / "pretrain" / "2d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for rerun, loss, probe in (("2d_rerun", 4.5, 0.95), ("2d_rerun2", 4.0, 0.85)):
        (folder / rerun).mkdir()
        again = json.dumps(dict(rows[1], eval_loss=loss))
        (folder / rerun / "pretrain.jsonl").write_text(again + "\n")
        (folder / rerun / "probe_esol.json").write_text(json.dumps(_result("rmse", (probe, 0.0))))
    tuned = _result("roc_auc", (0.79, 0.01), best_epochs=(4, 6, 8))
    (folder / "2d_rerun2" / "finetune_b3db.json").write_text(json.dumps(tuned))


def _tables(folder):
    run = run_experiment("study/study_tables.py", str(folder), f"--out={folder / 'tables.md'}")
    assert run.returncode == 0, run.stderr
    assert (folder / "tables.md").read_text() == run.stdout
    return run.stdout.splitlines()


def test_tables_and_goal_from_hand_checked_results(tmp_path):
    _write_study(tmp_path)
    lines = _tables(tmp_path)
    # Mean ± std of every init and the forest; a run that is not there is '-'.
    esol = "1.000 ± 0.100 | 0.800 ± 0.050 | 1.100 ± 0.000 | 0.900 ± 0.200 | 1.500 ± 0.010"
    assert f"| ESOL (100) | RMSE ↓ | {esol} |" in lines
    b3db = "0.700 ± 0.020 | 0.770 ± 0.010 | 0.630 ± 0.000 | 0.910 ± 0.000 | -"
    assert f"| B3DB (100) | ROC-AUC ↑ | {b3db} |" in lines
    assert "| ESOL | 1.010 / 0.810 / 1.110 / 0.910 | 7/9/11; 7/9/11; 7/9/11; 7/9/11 |" in lines
    # A checkpoint's probe is one embedding: no spread shown.
    assert "| ESOL | RMSE ↓ | 1.000 ± 0.020 | 0.900 | - | - |" in lines
    # Gains: RMSE (1.0 - 0.8) / 1.0 = +20%, ROC-AUC (0.77 - 0.70) / 0.70 = +10%.
    assert "| ESOL | +20.0 | -10.0 | +10.0 |" in lines
    assert "| B3DB | +10.0 | -10.0 | +30.0 |" in lines
    assert "| mean over sets | +15.0 (2) | -10.0 (2) | +20.0 (2) |" in lines
    assert "| ESOL | +10.0 | - | - |" in lines  # The probe gain.
    # Each lr/ run beside the study's own (at 1e-4); an lr an init did not run is '-'.
    assert "| data set | init | peak lr 3e-05 | peak lr 0.0001 | peak lr 0.0003 |" in lines
    scratch = "1.200 ± 0.100 (best epochs 3/4) | 1.000 ± 0.100 (best epochs 7/9/11) | -"
    assert f"| ESOL | scratch | {scratch} |" in lines
    blend = "- | 0.800 ± 0.050 (best epochs 7/9/11) | 0.700 ± 0.000 (best epochs 3/4)"
    assert f"| ESOL | blend | {blend} |" in lines
    # Held-out pretraining rows only; 2d's zero denoising cosine (no 3D input) is '-'.
    assert "| `2d` | 1,000 | 5.000 | 0.250 | 0.500 | 0.125 | - |" in lines
    # Blend beats scratch on both sets by more than either std, beats 2d, not 3d: not met.
    assert lines[-4].startswith("- blend beats scratch by more than the seeds' std on 2 of 2 sets")
    assert lines[-2].startswith("- blend does not beat 3d on average")
    assert lines[-1] == "- goal not met."


def test_reruns_beside_the_first_run(tmp_path):
    _write_study(tmp_path)  # 2d pretrained twice more (2d_rerun, 2d_rerun2).
    lines = _tables(tmp_path)
    # Held out at the last common step, then the probes with their mean ± std over the runs
    # that have one: (0.95 + 0.85) / 2, population std 0.05.
    runs = "`2d` | `2d_rerun` | `2d_rerun2`"
    assert f"| measure | {runs} | runs: mean ± std | random init / scratch |" in lines
    assert "| loss (held out) at step 1,000 | 5.000 | 4.500 | 4.000 | - | - |" in lines
    assert "| denoising cosine at step 1,000 | - | - | - | - | - |" in lines
    assert "| probe, ESOL RMSE ↓ | - | 0.950 | 0.850 | 0.900 ± 0.050 | 1.000 ± 0.020 |" in lines
    assert "| probe, B3DB ROC-AUC ↑ | - | - | - | - | - |" in lines
    # Fine-tuned rows only where a re-run was fine-tuned: (0.63 + 0.79) / 2, std 0.08.
    b3db = "0.630 ± 0.000 | - | 0.790 ± 0.010 | 0.710 ± 0.080 | 0.700 ± 0.020"
    assert f"| fine-tuned, B3DB ROC-AUC ↑ | {b3db} |" in lines
    assert not any(line.startswith("| fine-tuned, ESOL") for line in lines)


def test_a_win_inside_the_spread_is_not_a_win(tmp_path):
    esol_metric, esol = STUDY["esol"]
    _write_study(tmp_path, {**STUDY, "esol": (esol_metric, {**esol, "blend": (0.95, 0.05)})})
    lines = _tables(tmp_path)  # ESOL: 0.05 better, inside scratch's std of 0.1.
    assert "the seeds' std on 1 of 2 sets (B3DB)" in lines[-4]


def test_the_goal_is_met_by_three_wins_and_the_best_average(tmp_path):
    wins = {"scratch": (1.0, 0.01), "blend": (0.8, 0.01), "2d": (0.9, 0.0), "3d": (0.9, 0.0)}
    _write_study(tmp_path, {name: ("rmse", wins) for name in ("esol", "freesolv", "lipophilicity")})
    lines = _tables(tmp_path)
    assert lines[-4].startswith("- blend beats scratch by more than the seeds' std on 3 of 3 sets")
    assert lines[-3].startswith("- blend beats 2d on average")
    assert lines[-1] == "- goal met."


def test_an_empty_folder_is_a_one_line_error(tmp_path):
    run = run_experiment("study/study_tables.py", str(tmp_path))
    assert run.returncode != 0
    assert "no results of esol, freesolv, b3db, lipophilicity under" in run.stderr


def test_a_run_with_other_settings_beside_the_first_run(tmp_path):
    _write_study(tmp_path)
    (tmp_path / "settings.json").write_text(json.dumps(dict(corpus=50000, steps=1000, seeds=3)))
    run = tmp_path / "2d_corpus100k"  # 2d on twice the corpus for twice the steps.
    run.mkdir()
    (run / "settings.json").write_text(json.dumps(dict(corpus=100000, steps=2000, seeds=3)))
    rows = [dict(step=1000, eval_loss=4.0), dict(step=2000, eval_loss=3.5, eval_spd_accuracy=0.5)]
    (run / "pretrain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "probe_esol.json").write_text(json.dumps(_result("rmse", (0.8, 0.0))))
    lines = _tables(tmp_path)
    # Its own section, each run at its own last held-out step, no mean ± std across settings.
    at = lines.index("### `2d` with other pretraining settings")
    assert lines[at + 2] == "| measure | `2d` | `2d_corpus100k` | random init / scratch |"
    assert "| settings | the study's | corpus 100,000, steps 2,000 | - |" in lines[at:]
    assert "| last held-out step | 1,000 | 2,000 | - |" in lines[at:]
    assert "| loss (held out) at it | 5.000 | 3.500 | - |" in lines[at:]
    assert "| SPD accuracy at it | 0.250 | 0.500 | - |" in lines[at:]
    assert "| probe, ESOL RMSE ↓ | - | 0.800 | 1.000 ± 0.020 |" in lines[at:]
    # A re-run with the study's settings stays with the re-runs.
    assert (
        "| measure | `2d` | `2d_rerun` | `2d_rerun2` | runs: mean ± std | random init / scratch |"
        in lines
    )
