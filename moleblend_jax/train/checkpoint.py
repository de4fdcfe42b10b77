"""Orbax checkpoints of the train state plus the input-pipeline position."""

import logging
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from etils import epath

from moleblend_jax.train.paths import as_path


class _DropOrbaxInfo(logging.Filter):
    """Drops orbax's INFO records (about 40 lines per checkpoint); its warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def quiet_orbax_info_logs() -> None:
    """Keeps the command-line scripts' logs readable; call once from a main()."""
    absl_logging.get_absl_handler().addFilter(_DropOrbaxInfo())


class Checkpointer:
    """Saves every `save_every` steps (and on demand); restores the latest step.

    The data-pipeline position (the number of global batches consumed) is stored as JSON
    beside the state, so a resumed run reads exactly the batches an uninterrupted run would.
    Restoring takes target shardings, so a run may resume on a different device count.
    """

    def __init__(self, directory: str | epath.Path, save_every: int, keep: int):
        self.directory = as_path(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                save_interval_steps=save_every, max_to_keep=keep, create=True
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_position: int, force: bool = False) -> bool:
        if step in self._manager.all_steps():  # E.g. the final save right after a periodic one.
            return False
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave({"step": step, "data_position": data_position}),
            ),
            force=force,
        )

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restores `step` (default: latest) into the shapes/shardings of `abstract_state`."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint found in {self.directory}.")
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                meta=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], restored["meta"]

    def reached_preemption(self, step: int) -> bool:
        return self._manager.reached_preemption(step)

    def wait_until_finished(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def restore_params(directory: str | epath.Path, step: int | None = None) -> dict:
    """Loads only the parameters of a pretraining checkpoint, as host numpy arrays.

    Used by fine-tuning, which builds a different model around the same encoder.
    """
    directory = as_path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"Checkpoint directory {directory} does not exist.")
    with ocp.CheckpointManager(directory) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint found in {directory}.")
        metadata = manager.item_metadata(step)
        state_meta = metadata["state"] if "state" in metadata else metadata
        target = jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype),
            state_meta,
            is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"),
        )
        restored = manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(target)),
        )
    return jax.device_get(restored["state"]["params"])
