"""One writer for everything a run logs: metrics.jsonl, TensorBoard events, a loss curve.

Paths go through `etils.epath`, so a workdir may be local or `gs://...`.
"""

import io
import json
from collections.abc import Mapping

import numpy as np
from etils import epath

from moleblend_jax.train.paths import as_path, is_local


class MetricWriter:
    """Appends one JSON object per logged step to `workdir/metrics.jsonl` and mirrors the
    scalars to TensorBoard under `workdir/tensorboard/<run>`. Only the writing process
    (process 0) should enable it.

    Several writers may share one metrics.jsonl (fine-tuning seeds: a `seed` field tells their
    rows apart); each `run` gets its own TensorBoard directory so runs do not overwrite each
    other's curves.
    """

    def __init__(self, workdir: str | epath.Path, enabled: bool = True, run: str = ""):
        self.workdir = as_path(workdir)
        self.enabled = enabled
        self._tensorboard = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.workdir.mkdir(parents=True, exist_ok=True)
            logdir = self.workdir / "tensorboard"
            self._tensorboard = SummaryWriter(str(logdir / run if run else logdir))

    @property
    def jsonl_path(self) -> epath.Path:
        return self.workdir / "metrics.jsonl"

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        line = json.dumps(record) + "\n"
        if is_local(self.jsonl_path):
            with self.jsonl_path.open("a") as f:
                f.write(line)
        else:  # Object stores have no append: rewrite the (small) file.
            previous = self.jsonl_path.read_text() if self.jsonl_path.exists() else ""
            self.jsonl_path.write_text(previous + line)
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


def read_jsonl(path: str | epath.Path) -> list[dict]:
    text = as_path(path).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def plot_loss_curve(jsonl_path: str | epath.Path, png_path: str | epath.Path) -> None:
    """Total loss and each loss term against the step, log-scaled, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = read_jsonl(jsonl_path)
    records = [r for r in lines if "loss" in r]
    evals = [r for r in lines if "eval_loss" in r]
    if not records:
        return
    steps = np.array([r["step"] for r in records])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key in ("loss", "spd_loss", "edge_loss", "direction_loss", "denoise_loss"):
        if key in records[0]:
            ax.plot(steps, [r[key] for r in records], label=key, lw=2 if key == "loss" else 1)
    if evals:
        ax.plot(
            [r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval_loss"
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    as_path(png_path).write_bytes(buffer.getvalue())
