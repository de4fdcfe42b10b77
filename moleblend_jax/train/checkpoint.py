"""Orbax checkpoints of the train state (MaxText's order: restore into the abstract state)."""

import contextlib
import logging
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from etils import epath

from moleblend_jax.errors import UserError, one_line
from moleblend_jax.train.paths import as_path, is_local


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (a full disk, a lost mount); the previous one is kept."""


class _DropOrbaxInfo(logging.Filter):
    """Drops orbax's INFO records (about 40 lines per checkpoint); its warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def quiet_orbax_info_logs() -> None:
    """Keeps the command-line scripts' logs readable; call once from a main()."""
    absl_logging.get_absl_handler().addFilter(_DropOrbaxInfo())


class Checkpointer:
    """Saves every `save_every` steps (and on demand); restores the latest step.

    The state's `step` is also the input-pipeline position (global batches consumed), so a
    resumed run reads exactly the batches an uninterrupted run would. Restoring takes target
    shardings, so a run may resume on a different device count.

    A save is written in the background while the next step runs, and its result is checked
    before the step after (the next `save` call): a failed write raises CheckpointWriteError
    naming the path and the OS error at once, not at the next periodic save.
    """

    def __init__(self, directory: str | epath.Path, save_every: int, keep: int):
        self.directory = as_path(directory)
        self._writing: int | None = None  # Step of the save in flight.
        self._failed = False
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                save_interval_steps=save_every, max_to_keep=keep, create=True
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, force: bool = False) -> bool:
        self._check_written()
        if step in self._manager.all_steps():  # E.g. the final save right after a periodic one.
            return False
        started = self._manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=force
        )
        if started:
            self._writing = step
        return started

    def _check_written(self) -> None:
        """Waits for the save in flight; raises CheckpointWriteError if it failed."""
        step, self._writing = self._writing, None
        if step is None:
            return
        try:
            self._manager.wait_until_finished()
        except Exception as err:  # noqa: BLE001 - orbax re-raises the writer's error as is.
            self._failed = True
            self._remove_partial(step)
            raise CheckpointWriteError(
                f"{self.directory}: writing checkpoint {step} failed ({one_line(err)[:500]}); "
                f"the last good checkpoint is step {self.latest_step()}"
            ) from err

    def _remove_partial(self, step: int) -> None:
        """Deletes a failed save's temporary directory (on a full disk it holds the space)."""
        if is_local(self.directory):
            for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(partial, ignore_errors=True)

    def restore(self, abstract_state: Any, step: int | None = None) -> Any:
        """Restores `step` (default: latest) straight into the shapes and shardings of
        `abstract_state` (ShapeDtypeStructs): no initialised state is needed first."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint found in {self.directory}.")
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        )
        return restored["state"]

    def reached_preemption(self, step: int) -> bool:
        return self._manager.reached_preemption(step)

    def wait_until_finished(self) -> None:
        self._check_written()

    def close(self) -> None:
        """Waits for the last save (raising if it failed) and closes the manager."""
        try:
            self._check_written()
        finally:
            # After a failed save orbax would raise its error once more.
            with contextlib.suppress(Exception) if self._failed else contextlib.nullcontext():
                self._manager.close()


def restore_params(directory: str | epath.Path, step: int | None = None) -> dict:
    """Loads only the `params` subtree of a pretraining checkpoint, as host numpy arrays.

    The optimizer state (twice the params' size) is never read. Used by fine-tuning, which
    builds a different model around the same encoder.
    """
    directory = as_path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"Checkpoint directory {directory} does not exist.")
    handlers = {"state": ocp.PyTreeCheckpointHandler()}
    with ocp.CheckpointManager(directory, item_handlers=handlers) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint found in {directory}.")
        params_meta = manager.item_metadata(step)["state"]["params"]
        is_leaf = lambda m: hasattr(m, "shape") and hasattr(m, "dtype")
        target = {
            "params": jax.tree.map(lambda m: np.zeros((), m.dtype), params_meta, is_leaf=is_leaf)
        }
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    target, restore_args=restore_args, partial_restore=True
                )
            ),
        )
    return restored["state"]["params"]
