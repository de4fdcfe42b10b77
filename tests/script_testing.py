"""The repository's experiments/ scripts run as a user runs them: a subprocess from the root."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_experiment(script: str, *flags: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python experiments/SCRIPT FLAGS...` from the repository root, its output captured; the
    caller checks returncode (a failing script is an outcome some tests want)."""
    return subprocess.run(
        [sys.executable, str(REPO / "experiments" / script), *flags],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_errors(procs: dict[str, subprocess.Popen]) -> None:
    """Each process (started with stderr piped, text mode) exits 2 with one last stderr line
    `error: ...` that contains its key, and no traceback."""
    for text, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        lines = stderr.strip().splitlines()
        assert proc.returncode == 2, (text, stderr[-2000:])
        assert lines[-1].startswith("error: ") and text in lines[-1], (text, lines[-1])
        assert "Traceback" not in stderr
