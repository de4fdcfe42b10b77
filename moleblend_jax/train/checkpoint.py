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
from moleblend_jax.train import legacy_params
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
            item_handlers={"state": ocp.StandardCheckpointHandler()},
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
        """Restores `step` (default: the latest readable one) straight into the shapes and
        shardings of `abstract_state` (ShapeDtypeStructs): no initialised state is needed first.

        An unreadable latest checkpoint (corrupt files) is deleted, with a warning, and the one
        before it restored. Params of other shapes than `abstract_state`'s (another model
        size) are a UserError naming them; no readable checkpoint at all is a UserError too.
        A state written in an older param layout is restored in it and upgraded, with a log
        line (`train.legacy_params`).
        """
        steps = sorted(self._manager.all_steps(), reverse=True) if step is None else [step]
        if not steps:
            raise FileNotFoundError(f"No checkpoint found in {self.directory}.")
        unreadable = []
        for candidate in steps:
            try:
                state = self._restore(candidate, abstract_state)
            except UserError:
                raise
            except Exception as err:  # noqa: BLE001 - orbax and tensorstore raise many kinds.
                logging.warning("%s/%d is unreadable: %s", self.directory, candidate, one_line(err))
                unreadable.append((candidate, err))
                continue
            for bad, _ in unreadable:  # Else the resumed run would skip saving that step.
                logging.warning(
                    "Deleting %s/%d; resuming from step %d.", self.directory, bad, candidate
                )
                self._manager.delete(bad)
            return state
        raise UserError(
            f"{self.directory}: no readable checkpoint (step {unreadable[0][0]}: "
            f"{one_line(unreadable[0][1])[:400]})"
        )

    def _restore(self, step: int, abstract_state: Any) -> Any:
        where = f"{self.directory}/{step}"
        saved = self._manager.item_metadata(step)["state"]
        target = abstract_state
        if legacy_params.has_one_degree_table(saved["params"]):
            target = legacy_params.merge_degree_tables(abstract_state)
        require_same_params(
            saved["params"],
            target.params,
            where,
            "resume with the config it was written with (config.json next to it)",
        )
        restored = self._manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        )["state"]
        if target is abstract_state:
            return restored
        upgraded = legacy_params.upgrade(restored, where)
        return jax.tree.map(lambda x, a: jax.device_put(x, a.sharding), upgraded, abstract_state)

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


def param_shapes(tree: Any) -> dict[str, tuple]:
    """Leaf name ("encoder/layer_0/ffn/kernel") -> shape of a params tree or its metadata."""
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
    name = lambda path: "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)  # noqa: E731
    return {name(path): tuple(leaf.shape) for path, leaf in leaves}


def _whole_modules(names: set[str], every: set[str]) -> list[str]:
    """Param names -> the shortest prefixes (modules) all of whose params in `every` are in
    `names`: "layer_4" when a whole layer is missing, the param's name when only it is."""
    modules = set()
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if all(n in names for n in every if n == prefix or n.startswith(prefix + "/")):
                modules.add(prefix)
                break
    return sorted(modules)


def require_same_params(
    saved: Any, wanted: Any, where: str, advice: str, allow_extra: bool = False
) -> None:
    """UserError naming what a checkpoint's params tree `saved` has with other shapes than the
    model's `wanted` (arrays or their metadata), lacks, or (unless `allow_extra`) adds; the
    one check of checkpoints against a model (resume, fine-tuning, embeddings)."""
    have, want = param_shapes(saved), param_shapes(wanted)
    differ = sorted(k for k in have.keys() & want.keys() if have[k] != want[k])
    missing = _whole_modules(want.keys() - have.keys(), set(want))
    extra = [] if allow_extra else _whole_modules(have.keys() - want.keys(), set(have))
    if differ or missing or extra:
        shapes = [f"{k} {have[k]} (model {want[k]})" for k in differ[:3]]
        raise UserError(
            f"{where} holds another model: {len(differ)} params of other shapes {shapes}, "
            f"missing from the checkpoint {missing[:5]}, only in the checkpoint {extra[:5]}; "
            f"{advice}"
        )


def latest_step(directory: str | epath.Path) -> int | None:
    """The newest step saved in an orbax checkpoints directory (None: none, or no directory)."""
    directory = as_path(directory)
    if not directory.exists():
        return None
    with ocp.CheckpointManager(directory) as manager:
        return manager.latest_step()


def restore_params(directory: str | epath.Path, step: int | None = None) -> dict:
    """Loads only the `params` subtree of a pretraining checkpoint, as host numpy arrays.

    The optimizer state (twice the params' size) is never read. Used by fine-tuning, which
    builds a different model around the same encoder, and by prediction and embeddings. Params
    of an older layout come back in today's, with a log line (`train.legacy_params`).
    """
    directory = as_path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"Checkpoint directory {directory} does not exist.")
    handlers = {"state": ocp.PyTreeCheckpointHandler()}
    with ocp.CheckpointManager(directory, item_handlers=handlers) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"No checkpoint found in {directory}.")
        if step not in manager.all_steps():
            raise FileNotFoundError(
                f"No step {step} in {directory} (it has {sorted(manager.all_steps())})."
            )
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
    return legacy_params.upgrade(restored["state"]["params"], f"{directory}/{step}")
