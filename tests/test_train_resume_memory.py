"""A resume restores straight into the abstract state: it never holds two states at once."""

import os
import subprocess
import sys

from train_testing import REPO

# Measures the peak RSS of one child process (the pretraining run) in a fresh interpreter.
_PEAK_RSS = (
    "import resource, subprocess, sys; run = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(run.returncode)"
)


def _peak_rss_kib(data_dir, workdir) -> int:
    # A state of ~1.7 GB (params + Adam moments) that costs little compute: a huge atom
    # vocabulary (144M embedding params) in front of a 1-layer, 32-wide model.
    overrides = {
        "model.num_layers": 1,
        "model.hidden_dim": 32,
        "model.ffn_dim": 32,
        "model.num_heads": 4,
        "model.num_kernels": 16,
        "model.atom_vocab_size": 500_000,
        "data.dir": data_dir,
        "data.buckets": "(16,)",
        "data.max_atoms": 16,
        "batch_size": 8,
        "total_steps": 2,
        "max_steps_per_run": 1,  # The first run stops (checkpointing) after 1 step.
        "optimizer.warmup_steps": 1,
        "log_every": 1,
        "checkpoint_every": 1,
        "eval_batches": 0,
    }
    command = [
        sys.executable,
        "-c",
        _PEAK_RSS,
        sys.executable,
        "experiments/pretrain.py",
        "--config=configs/base.py:tiny",
        f"--workdir={workdir}",
        *(f"--config.{key}={value}" for key, value in overrides.items()),
    ]
    env = {**os.environ, "XLA_FLAGS": ""}  # One CPU device, not the tests' 8 replicas.
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return int(run.stdout.strip().splitlines()[-1])


def test_resume_peak_memory_is_one_state(qm9_shards, tmp_path):
    fresh = _peak_rss_kib(qm9_shards, tmp_path)  # Initialises, trains step 1, saves.
    resumed = _peak_rss_kib(qm9_shards, tmp_path)  # Restores step 1, trains step 2.
    assert (tmp_path / "checkpoints" / "2").exists()
    print(f"\npeak RSS: fresh start {fresh / 2**20:.2f} GiB, resume {resumed / 2**20:.2f} GiB")
    # Initialising and then restoring would hold the ~1.7 GB state on top of the restore's
    # transient host copy (~1.3 GB): ~1.6x a fresh start. Measured 1.27x without pyarrow in
    # the environment and 1.37x with it (apache-beam's dependency, which TensorFlow's pandas
    # import loads; the cause of its extra 0.6 GB on resume only is not known).
    assert resumed < 1.45 * fresh, (fresh, resumed)
