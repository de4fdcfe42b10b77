"""One writer for everything a run logs: metrics.jsonl, TensorBoard events, a loss curve."""

import json
import pathlib
from collections.abc import Mapping

import numpy as np


class MetricWriter:
    """Appends one JSON object per logged step to `workdir/metrics.jsonl` and mirrors the
    scalars to TensorBoard. Only the writing process (process 0) should enable it."""

    def __init__(self, workdir: str | pathlib.Path, enabled: bool = True):
        self.workdir = pathlib.Path(workdir)
        self.enabled = enabled
        self._tensorboard = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.workdir.mkdir(parents=True, exist_ok=True)
            self._tensorboard = SummaryWriter(str(self.workdir / "tensorboard"))

    @property
    def jsonl_path(self) -> pathlib.Path:
        return self.workdir / "metrics.jsonl"

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        with self.jsonl_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in scalars.items():
            self._tensorboard.add_scalar(name, float(value), int(step))

    def truncate_after(self, step: int) -> None:
        """Drops lines logged after `step` (they belong to a run that died before its next
        checkpoint and will be logged again by the resumed run)."""
        if not self.enabled or not self.jsonl_path.exists():
            return
        kept = [line for line in read_jsonl(self.jsonl_path) if line["step"] <= step]
        self.jsonl_path.write_text("".join(json.dumps(line) + "\n" for line in kept))

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def read_jsonl(path: str | pathlib.Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_loss_curve(jsonl_path: str | pathlib.Path, png_path: str | pathlib.Path) -> None:
    """Total loss and each loss term against the step, log-scaled, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_jsonl(jsonl_path)
    if not records:
        return
    steps = np.array([r["step"] for r in records])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in ("loss", "spd_loss", "edge_loss", "direction_loss", "denoise_loss"):
        if key in records[0]:
            ax.plot(steps, [r[key] for r in records], label=key, lw=2 if key == "loss" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
