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


def _start(num_processes: int, data_dir, out) -> list[subprocess.Popen]:
    port = _free_port()
    return [
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


def _finish(procs: list[subprocess.Popen], out) -> dict:
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    return json.loads(out.read_text())


def test_two_processes_give_the_same_loss_as_one(qm9_shards, tmp_path):
    # Both runs at once: each process spends most of its time compiling, on one core.
    single_procs = _start(1, qm9_shards, tmp_path / "single.json")
    multi_procs = _start(2, qm9_shards, tmp_path / "multi.json")
    single = _finish(single_procs, tmp_path / "single.json")
    multi = _finish(multi_procs, tmp_path / "multi.json")
    assert single["devices"] == 2 and multi["devices"] == 4
    np.testing.assert_allclose(multi["losses"], single["losses"], rtol=1e-5)


# One process of a 2-process run that only prepares the pretraining data (no model).
_PREPARE_DATA = """
import json, sys
import jax
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
from moleblend_jax.configs import base
from moleblend_jax.train import inputs
config = base.get_config("tiny")
config.data.max_molecules, config.data.eval_molecules, config.data.max_atoms = 300, 64, 16
print(json.dumps(inputs.prepare_pretraining_data(config, sys.argv[3])._asdict()))
"""


def test_two_processes_without_data_dir_wait_for_the_default_shards(tmp_path):
    """Process 0 builds the default QM9 shards; process 1 waits at the barrier instead of
    failing on a directory that is still being written."""
    address = f"localhost:{_free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PREPARE_DATA, address, str(i), str(tmp_path)],
            cwd=REPO,
            env={**os.environ, "XLA_FLAGS": ""},  # One CPU device per process.
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    dirs = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert (
        dirs[0]
        == dirs[1]
        == {
            "train_dir": str(tmp_path / "data" / "qm9"),
            "eval_dir": str(tmp_path / "data" / "qm9_eval"),
            "num_oversize": 0,
        }
    )
    train_meta = json.loads((tmp_path / "data" / "qm9" / "metadata.json").read_text())
    eval_meta = json.loads((tmp_path / "data" / "qm9_eval" / "metadata.json").read_text())
    assert train_meta["num_written"] + train_meta["num_skipped"] == 300
    assert eval_meta["num_written"] + eval_meta["num_skipped"] == 64
    assert eval_meta["args"]["offset"] == 300  # The held-out molecules follow the prefix.
