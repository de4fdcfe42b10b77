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
