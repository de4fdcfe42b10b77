"""The client side of worker.py: start the PyTorch step server, ask it for timed steps.

Used by `benchmarks/benchmark.py --torch`, which alternates these steps with ours.
"""

import json
import pathlib
import subprocess
import sys

WORKER = pathlib.Path(__file__).with_name("worker.py")
# Our config variant -> the reference's config with the same sizes and our factored pair heads.
CONFIGS = {"tiny": "tiny_fh", "base": "base_fh"}


class TorchSteps:
    """The PyTorch reference's step server for one config, in a long-lived subprocess."""

    def __init__(self, variant: str, modes: list[str], batch_size: int, num_atoms: int):
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                f"--config={CONFIGS[variant]}",
                f"--modes={','.join(modes)}",
                f"--batch={batch_size}",
                f"--atoms={num_atoms}",
            ],
            cwd=WORKER.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = json.loads(self.process.stdout.readline() or "{}")
        if not ready.get("ready"):
            raise SystemExit("The PyTorch reference did not start: pip install -e '.[bench]'.")
        self.info = {"impl": "torch", "config": CONFIGS[variant], **ready}
        del self.info["ready"]

    def run(self, mode: str, num_steps: int) -> tuple[list[float], float]:
        """Time `num_steps` steps of `mode`; -> (seconds each, last loss)."""
        self.process.stdin.write(f"{mode} {num_steps}\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        return answer["step_s"], answer["loss"]

    def close(self):
        self.process.stdin.close()
        self.process.wait()
