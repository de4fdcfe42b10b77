"""Two processes on localhost (JAX's multi-process CPU runtime) == one process."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
from train_testing import REPO

WORKER = REPO / "tests" / "multiprocess_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run(num_processes: int, data_dir, out) -> dict:
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(i),
                str(num_processes),
                str(port),
                str(data_dir),
                str(out),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(num_processes)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    return json.loads(out.read_text())


def test_two_processes_give_the_same_loss_as_one(qm9_shards, tmp_path):
    single = _run(1, qm9_shards, tmp_path / "single.json")
    multi = _run(2, qm9_shards, tmp_path / "multi.json")
    assert single["devices"] == 2 and multi["devices"] == 4
    np.testing.assert_allclose(multi["losses"], single["losses"], rtol=1e-5)


def test_two_processes_without_data_dir_wait_for_the_default_shards(tmp_path):
    """Process 0 builds the default QM9 shards; process 1 waits at the barrier, not crashing
    on a half-written directory."""
    port = _free_port()
    overrides = {
        "model.num_layers": 2,
        "model.hidden_dim": 32,
        "model.ffn_dim": 32,
        "model.num_heads": 4,
        "model.num_kernels": 16,
        "batch_size": 16,
        "total_steps": 4,
        "optimizer.warmup_steps": 1,
        "data.max_molecules": 300,
        "data.eval_molecules": 64,
        "data.max_atoms": 16,
        "data.buckets": "(16,)",
        "log_every": 2,
        "eval_every": 4,
        "eval_batches": 1,
        "checkpoint_every": 4,
    }
    command = [
        sys.executable,
        "experiments/pretrain.py",
        "--config=configs/base.py:tiny",
        f"--workdir={tmp_path}",
        f"--coordinator_address=localhost:{port}",
        "--num_processes=2",
        *(f"--config.{key}={value}" for key, value in overrides.items()),
    ]
    procs = [
        subprocess.Popen(
            [*command, f"--process_id={i}"],
            cwd=REPO,
            env={**os.environ, "XLA_FLAGS": ""},  # One CPU device per process.
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    train_meta = json.loads((tmp_path / "data" / "qm9" / "metadata.json").read_text())
    eval_meta = json.loads((tmp_path / "data" / "qm9_eval" / "metadata.json").read_text())
    assert train_meta["num_written"] + train_meta["num_skipped"] == 300
    assert eval_meta["num_written"] + eval_meta["num_skipped"] == 64
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert np.isfinite(rows[-1]["eval_loss"])
