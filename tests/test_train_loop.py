"""The pretraining loop end to end: resume, learning, fail-fast checks, outputs."""

import json

import jax
import numpy as np
import pytest
from train_testing import small_config

from moleblend_jax.train import checkpoint, inputs, loop
from moleblend_jax.train.metrics_writer import read_jsonl
from moleblend_jax.train.telemetry import without_timing


def _final_params(workdir):
    return checkpoint.restore_params(workdir / "checkpoints")


# The runs below are shared by the tests that only read what a run wrote: each run costs a
# step compile (or a persistent-cache read) and orbax saves, the suite's main cost.
EVAL = {"eval_every": 4, "eval_batches": 2}


@pytest.fixture(scope="module")
def runs(qm9_shards, tmp_path_factory):
    """An uninterrupted 8-step run and the same run killed at step 4 and resumed, both with a
    held-out evaluation every 4 steps. -> dict of workdirs and the rows after the first part."""
    root = tmp_path_factory.mktemp("runs")
    overrides = {"data.eval_dir": str(qm9_shards), **EVAL}
    loop.train_and_evaluate(small_config(qm9_shards, total_steps=8, **overrides), root / "straight")
    interrupted = small_config(qm9_shards, total_steps=8, max_steps_per_run=4, **overrides)
    loop.train_and_evaluate(interrupted, root / "resumed")  # Stops at step 4.
    first_part = read_jsonl(root / "resumed" / "metrics.jsonl")
    loop.train_and_evaluate(interrupted, root / "resumed")  # Resumes 4 -> 8.
    return {"straight": root / "straight", "resumed": root / "resumed", "first_part": first_part}


def test_kill_and_resume_matches_uninterrupted_run(runs):
    assert runs["first_part"][-1]["step"] == 4
    straight = [without_timing(r) for r in read_jsonl(runs["straight"] / "metrics.jsonl")]
    resumed = [without_timing(r) for r in read_jsonl(runs["resumed"] / "metrics.jsonl")]
    assert [r["step"] for r in straight] == [2, 4, 6, 8]
    assert straight == resumed
    jax.tree.map(
        np.testing.assert_array_equal,
        _final_params(runs["resumed"]),
        _final_params(runs["straight"]),
    )


def test_run_writes_metrics_tensorboard_and_plot(runs):
    workdir = runs["straight"]
    records = read_jsonl(workdir / "metrics.jsonl")
    for key in ("step", "loss", "spd_loss", "edge_loss", "direction_loss", "denoise_loss"):
        assert key in records[-1]
    assert (workdir / "loss_curve.png").stat().st_size > 1000
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert checkpoint.Checkpointer(workdir / "checkpoints", 1, 1).latest_step() == 8


@pytest.mark.slow
def test_tiny_model_learns_on_qm9(qm9_shards, tmp_path):
    config = small_config(qm9_shards, total_steps=240)
    config.model.num_layers, config.model.hidden_dim, config.model.ffn_dim = 3, 64, 64
    config.optimizer.warmup_steps = 20
    config.log_every = 20
    config.checkpoint_every = 240
    loop.train_and_evaluate(config, tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    first, last = records[0], records[-1]
    # Measured: loss 6.28 -> 5.15 (6 x denoise dominates), spd 1.51 -> 0.74, edge 1.92 -> 0.30.
    assert last["loss"] < 0.9 * first["loss"], (first, last)
    assert last["spd_loss"] < 0.7 * first["spd_loss"], (first, last)
    assert last["edge_loss"] < 0.5 * first["edge_loss"], (first, last)
    assert last["denoise_loss"] < first["denoise_loss"], (first, last)
    assert last["spd_accuracy"] > 0.5  # Chance over 11 classes is 1/11.
    assert last["edge_accuracy"] > 0.6  # Chance over 24 joint bond classes is 1/24.
    assert last["direction_cosine"] > first["direction_cosine"] + 0.1


def test_unreadable_data_dir_fails_before_compiling(tmp_path):
    with pytest.raises(FileNotFoundError, match="nonexistent"):
        loop.train_and_evaluate(small_config(tmp_path / "nonexistent"), tmp_path / "w")
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_indivisible_batch_fails_before_compiling(qm9_shards, tmp_path):
    with pytest.raises(ValueError, match="not divisible"):
        loop.train_and_evaluate(small_config(qm9_shards, batch_size=12), tmp_path)


def test_wrong_config_key_is_rejected_by_the_command_line(tmp_path):
    import subprocess
    import sys

    from train_testing import REPO

    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "experiments" / "pretrain.py"),
            "--config=configs/base.py:tiny",
            f"--workdir={tmp_path}",
            "--config.optimizer.learning_rat=1e-3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "learning_rat" in result.stderr
    assert not any(tmp_path.iterdir())


def test_metrics_jsonl_is_one_json_object_per_line(runs):
    lines = (runs["straight"] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4, 6, 8]


def test_orbax_info_logs_are_dropped_but_warnings_kept():
    import logging

    dropper = checkpoint._DropOrbaxInfo()

    def record(level, path):
        return logging.LogRecord("absl", level, path, 1, "message", None, None)

    orbax_file = "/venv/site-packages/orbax/checkpoint/checkpoint_manager.py"
    assert not dropper.filter(record(logging.INFO, orbax_file))
    assert dropper.filter(record(logging.WARNING, orbax_file))
    assert dropper.filter(record(logging.INFO, "/repo/moleblend_jax/train/loop.py"))


def test_one_compile_per_bucket(qm9_shards, tmp_path, monkeypatch):
    import functools

    import chex

    from moleblend_jax.data import reader
    from moleblend_jax.train import step as step_lib

    histogram = reader.load_metadata(str(qm9_shards))["atom_count_histogram"]
    counts = {int(n): c for n, c in histogram.items()}
    batch_size = small_config().batch_size
    # A first bucket of 1 to 3 batches: the pipeline emits a chunk's batches bucket by bucket,
    # so 8 steps reach the second bucket too.
    split = max(
        n
        for n in counts
        if batch_size <= sum(c for m, c in counts.items() if m <= n) <= 3 * batch_size
    )
    buckets = (split, 16)
    traced_shapes = []

    original = step_lib.train_step

    @functools.wraps(original)  # The program keeps its name, so its cache key.
    def counted(state, batch, **kwargs):
        traced_shapes.append(batch["atom_mask"].shape[1])
        return original(state, batch, **kwargs)

    monkeypatch.setattr(step_lib, "train_step", chex.assert_max_traces(counted, n=len(buckets)))
    # total_steps=8 as elsewhere: the (16,) program comes from the persistent compile cache.
    config = small_config(qm9_shards, total_steps=8, **{"data.buckets": buckets})
    loop.train_and_evaluate(config, tmp_path)
    assert sorted(traced_shapes) == sorted(buckets)


def test_held_out_loss_joins_the_logged_lines(runs):
    rows = read_jsonl(runs["straight"] / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    assert [("eval_loss" in r) for r in rows] == [False, True, False, True]
    for key in ("eval_spd_loss", "eval_edge_loss", "eval_direction_loss", "eval_denoise_loss"):
        assert np.isfinite(rows[-1][key])
    weights = small_config().loss_weights
    terms = sum(weights[t] * rows[-1][f"eval_{t}_loss"] for t in loop.LOSS_TERMS)
    np.testing.assert_allclose(rows[-1]["eval_loss"], terms, rtol=1e-5)
    # The same draws every time: another run (here one that restarted) evaluates the same.
    resumed = read_jsonl(runs["resumed"] / "metrics.jsonl")
    assert [without_timing(r) for r in resumed] == [without_timing(r) for r in rows]


def test_molecules_above_the_largest_bucket_refuse_the_run(qm9_shards, tmp_path):
    from moleblend_jax.data import reader
    from moleblend_jax.errors import UserError

    histogram = reader.load_metadata(qm9_shards)["atom_count_histogram"]
    largest = max(int(n) for n in histogram)
    above = histogram[str(largest)]
    config = small_config(qm9_shards, **{"data.buckets": (largest - 1,)})
    message = (
        f"{above} molecules have more than {largest - 1} atoms.*largest molecule has {largest}"
        ".*drop_oversize"
    )
    with pytest.raises(UserError, match=message):
        loop.train_and_evaluate(config, tmp_path)
    assert not (tmp_path / "checkpoints").exists()
    config.data.drop_oversize = True
    assert inputs.prepare_pretraining_data(config, tmp_path).num_oversize == above > 0


def test_resume_with_another_batch_size_is_refused_before_compiling(runs, qm9_shards):
    from moleblend_jax.errors import UserError

    config = small_config(qm9_shards, total_steps=16, batch_size=8)
    with pytest.raises(UserError, match="batch_size: 16 -> 8"):
        loop.train_and_evaluate(config, runs["straight"])


def test_shards_without_coordinates_are_logged(tmp_path, caplog):
    import os

    from moleblend_jax.data import build_shards

    hostile = os.path.join(os.path.dirname(__file__), "data", "hostile.smi")
    build_shards(
        hostile, tmp_path, num_shards=1, workers=1, max_atoms=16, conformers="none", progress=False
    )
    with caplog.at_level("WARNING"):
        inputs.check_shards(str(tmp_path), small_config().data)
    assert "10 of 10 molecules have no 3D coordinates: their 3D losses are 0" in caplog.text


def test_user_mistakes_are_one_line_exit_2(tmp_path):
    """The pretraining and shard-building commands print a user's mistake as one line."""
    import os
    import subprocess
    import sys

    from train_testing import REPO

    (tmp_path / "mols.smi").write_bytes(bytes(range(256)))
    commands = {
        "config.batch_size=-8 must be positive": [
            "experiments/pretrain.py",
            "--config=configs/base.py:tiny",
            f"--workdir={tmp_path / 'w'}",
            "--config.batch_size=-8",
        ],
        "mols.smi: not a text file": [
            "data_prep/build_shards.py",
            f"--input={tmp_path / 'mols.smi'}",
            f"--output={tmp_path / 'out'}",
        ],
    }
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = {
        text: subprocess.Popen(
            [sys.executable, *command], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
        )
        for text, command in commands.items()
    }
    for text, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        last = stderr.strip().splitlines()[-1]
        assert proc.returncode == 2, (text, stderr[-2000:])
        assert last.startswith("error: ") and text in last and "Traceback" not in stderr, last


def test_ctrl_c_sets_the_save_and_stop_flag_like_sigterm():
    import os
    import signal

    before = signal.getsignal(signal.SIGINT)
    for signum in (signal.SIGINT, signal.SIGTERM):
        stop, restore = loop._install_stop_flag()
        assert not stop()
        os.kill(os.getpid(), signum)  # Handled at once: the flag is set, nothing raised.
        assert stop()
        if signum == signal.SIGINT:
            with pytest.raises(KeyboardInterrupt):  # A second Ctrl-C stops at once.
                os.kill(os.getpid(), signum)
        restore()
    assert signal.getsignal(signal.SIGINT) is before


def test_total_steps_below_the_checkpoint_says_so(runs, qm9_shards, caplog):
    config = small_config(qm9_shards, total_steps=4, **{"data.eval_dir": str(qm9_shards), **EVAL})
    with caplog.at_level("WARNING"):
        assert loop.train_and_evaluate(config, runs["straight"]) == {"step": 8}
    assert "is at step 8, config.total_steps=4: nothing to train" in caplog.text
    assert [r["step"] for r in read_jsonl(runs["straight"] / "metrics.jsonl")] == [2, 4, 6, 8]
