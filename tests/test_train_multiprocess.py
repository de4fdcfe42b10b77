"""Two processes on localhost (JAX's multi-process CPU runtime) == one process."""

import json
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
