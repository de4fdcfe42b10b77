"""Workdirs on object stores: a `gs://` workdir stays a URL through etils.epath.

No network here: the `gs` protocol is served by fsspec's in-memory filesystem for the test
(epath's fsspec backend, with TensorFlow's gfile backend switched off), and tensorboardX's
`gs` event writer is replaced by one that writes through epath.
"""

import importlib
import io

import pytest
from etils import epath
from fsspec.implementations.memory import MemoryFileSystem

from moleblend_jax.configs import base
from moleblend_jax.train import inputs
from moleblend_jax.train.metrics_writer import MetricWriter, plot_loss_curve, read_jsonl
from moleblend_jax.train.paths import as_path


class _EpathEventWriter:
    """tensorboardX record writer that buffers events and writes them with epath on flush."""

    def __init__(self, path: str):
        self._path, self._buffer = epath.Path(path), io.BytesIO()

    def write(self, data: bytes) -> None:
        self._buffer.write(data)

    def flush(self) -> None:
        self._path.write_bytes(self._buffer.getvalue())

    def close(self) -> None:
        self.flush()


class _EpathEventWriterFactory:
    def open(self, path: str) -> _EpathEventWriter:
        return _EpathEventWriter(path)

    def directory_check(self, path: str) -> None:
        del path  # Object stores need no directories.


@pytest.fixture
def memory_gs(monkeypatch):
    """`gs://` served from memory for this test only."""
    from etils.epath import gpath
    from tensorboardX import record_writer

    # epath would send gs:// to TensorFlow's gfile (GCS over the network) once TF is found.
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
    registry = importlib.import_module("fsspec.registry")._registry  # Not the read-only proxy.
    for protocol in ("gs", "gcs"):  # epath asks fsspec for "gcs".
        monkeypatch.setitem(registry, protocol, MemoryFileSystem)
    monkeypatch.setitem(record_writer.REGISTERED_FACTORIES, "gs", _EpathEventWriterFactory())
    yield MemoryFileSystem()
    MemoryFileSystem.store.clear()


def test_as_path_keeps_urls_and_absolutises_local_paths(tmp_path, monkeypatch):
    assert str(as_path("gs://bucket/run") / "checkpoints") == "gs://bucket/run/checkpoints"
    monkeypatch.chdir(tmp_path)
    assert str(as_path("workdirs/tiny")) == str(tmp_path / "workdirs" / "tiny")


def test_metrics_tensorboard_and_plot_on_a_gs_workdir(memory_gs):
    workdir = "gs://bucket/runs/tiny"
    writer = MetricWriter(workdir, run="seed_0")
    for step, loss in ((2, 3.0), (4, 2.5)):
        writer.write(step, {"loss": loss, "spd_loss": loss / 2})
    writer.truncate_after(2)
    writer.write(4, {"loss": 2.0, "spd_loss": 1.0, "eval_loss": 2.2})
    writer.close()
    plot_loss_curve(f"{workdir}/metrics.jsonl", f"{workdir}/loss_curve.png")

    rows = read_jsonl(f"{workdir}/metrics.jsonl")
    assert rows == [
        {"step": 2, "loss": 3.0, "spd_loss": 1.5},
        {"step": 4, "loss": 2.0, "spd_loss": 1.0, "eval_loss": 2.2},
    ]
    # Nothing went to a local "gs:" directory: every file is in the bucket.
    # Every file is in the bucket, none in a local "gs:" directory.
    files = {path: memory_gs.cat(path) for path in memory_gs.store}
    png, jsonl, events = sorted(files)
    assert (png, jsonl) == (f"{workdir}/loss_curve.png", f"{workdir}/metrics.jsonl")
    assert files[png][:4] == b"\x89PNG"
    assert events.startswith(f"{workdir}/tensorboard/seed_0/events.out.tfevents.")
    assert len(files[events]) > 0
    assert not epath.Path("gs:").exists()


def test_default_data_on_a_gs_workdir_is_refused_with_the_flag_to_set():
    config = base.get_config("tiny")
    with pytest.raises(ValueError, match="config.data.dir"):
        inputs.prepare_pretraining_data(config, "gs://bucket/run")
