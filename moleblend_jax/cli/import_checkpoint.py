"""Imports an original (fairseq) MoleBLEND checkpoint as this repository's orbax checkpoint.

  moleblend import-checkpoint --checkpoint=checkpoint_best.pt --workdir=DIR
  moleblend finetune --config=configs/finetune.py \
      --config.dataset=bbbp --config.init_checkpoint=DIR/checkpoints --workdir=FT_DIR

Writes DIR/checkpoints (step 0, the params only, as `train.checkpoint.restore_params` reads them)
and DIR/model_config.json (the model sizes taken from the checkpoint's cfg), and prints what was
mapped, dropped and cast to float32. Model sizes other than the base ones are printed as
--config.model.* overrides for the fine-tuning command. Needs torch to unpickle
(pip install -e '.[interop]'); without it the command says so and exits with status 2.
Mistakes (a missing, truncated or foreign file, NaN weights, a --workdir that already holds a
checkpoint or a fine-tuning run) are one line on stderr, exit status 2.
Mapping and known differences: docs/interop.md. The same: python experiments/import_checkpoint.py.
"""

import dataclasses
import re
from pathlib import Path

from absl import app, flags

from moleblend_jax import atomic
from moleblend_jax.cli import startup
from moleblend_jax.configs import base
from moleblend_jax.errors import MissingFileError, UserError, exit_on_user_error
from moleblend_jax.interop import fairseq, fairseq_file

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string(
        "checkpoint", None, "The original's checkpoint file (e.g. checkpoint_best.pt)."
    )
    flags.DEFINE_string(
        "workdir", None, "Output directory; the orbax checkpoint goes to DIR/checkpoints."
    )


# Fields of config.model that follow the checkpoint's cfg (fairseq_file.model_config_from_cfg).
SIZE_FIELDS = (
    "num_layers",
    "hidden_dim",
    "ffn_dim",
    "num_heads",
    "num_kernels",
    "max_path_hops",
    "num_spd_classes",
    "num_edge_classes",
    "direction_hidden_dim",
)


def write_orbax(params: dict, directory: Path) -> None:
    """params -> an orbax checkpoint at step 0 holding {"params": params}."""
    from moleblend_jax.train.checkpoint import Checkpointer

    checkpointer = Checkpointer(directory, save_every=1, keep=1)
    if checkpointer.latest_step() is not None:
        raise UserError(f"{directory} already holds a checkpoint; use a new --workdir")
    checkpointer.save(0, {"params": params}, force=True)
    checkpointer.close()


def size_overrides(model_config) -> list[str]:
    """--config.model.* flags that make configs/finetune.py's model match the checkpoint."""
    default = base.model_config()
    return [
        f"--config.model.{name}={getattr(model_config, name)}"
        for name in SIZE_FIELDS
        if getattr(model_config, name) != default[name]
    ]


def check_paths(checkpoint: str, workdir: str) -> None:
    """UserError for a checkpoint that is not a file, or a --workdir that is a fine-tuning
    workdir (its checkpoints are runs, not an import target)."""
    from moleblend_jax.finetune import workdir as finetune_workdir

    path = Path(checkpoint)
    if not path.exists():
        raise MissingFileError(f"--checkpoint={checkpoint} does not exist")
    if not path.is_file():
        raise UserError(f"--checkpoint={checkpoint} is not a file (give the .pt file)")
    if finetune_workdir.committed_dir(workdir) is not None or Path(workdir, "runs").is_dir():
        raise UserError(
            f"--workdir={workdir} is a fine-tuning workdir; import into a new directory"
        )


def read(checkpoint: str) -> fairseq.ImportedCheckpoint:
    """The converted checkpoint; UserError naming the file when it cannot be read or mapped,
    or holds NaN or inf weights."""
    from moleblend_jax.train.checkpoint import require_finite_params

    try:
        imported = fairseq.import_checkpoint(checkpoint)
    except (OSError, EOFError, RuntimeError, ValueError, KeyError, AttributeError) as err:
        raise UserError(
            f"{checkpoint}: not a readable fairseq MoleBLEND checkpoint "
            f"({type(err).__name__}: {err})"
        ) from None
    except Exception as err:  # noqa: BLE001 - unpickling raises arbitrary errors on junk.
        if type(err).__module__.startswith(("pickle", "_pickle", "zipfile")):
            raise UserError(f"{checkpoint}: not a PyTorch checkpoint ({err})") from None
        raise
    require_finite_params(imported.conversion.params, checkpoint)
    return imported


def run(checkpoint: str, workdir: str) -> fairseq.ImportedCheckpoint:
    """Converts `checkpoint`, writes DIR/checkpoints and DIR/model_config.json."""
    check_paths(checkpoint, workdir)
    imported = read(checkpoint)
    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    write_orbax(imported.conversion.params, out.resolve() / "checkpoints")
    config = dataclasses.asdict(imported.model_config)
    atomic.write_json(out / "model_config.json", config)
    return imported


def summary(imported: fairseq.ImportedCheckpoint) -> list[str]:
    """Human-readable lines: the mapping (layers folded), dropped keys, casts, notes."""
    conversion = imported.conversion
    mapped = sorted({re.sub(r"layers\.\d+\.", "layers.{i}.", k) for k in conversion.mapped})
    lines = [f"{conversion.kind} checkpoint: {len(conversion.mapped)} keys mapped"]
    lines += [f"  mapped  {key}" for key in mapped]
    lines += [f"  dropped {key} (HOMO-LUMO head, never in the loss)" for key in conversion.dropped]
    lines.append(
        f"  cast to float32: {len(imported.cast)} keys"
        + (f" ({imported.cast[0]}, ...)" if imported.cast else "")
    )
    lines += [f"  note    {note}" for note in conversion.notes]
    overrides = size_overrides(imported.model_config)
    if overrides:
        lines.append("  fine-tune with: " + " ".join(overrides))
    return lines


def require_torch() -> None:
    """UserError (exit status 2) with the install command when torch is missing."""
    try:
        fairseq_file.import_torch()
    except fairseq_file.TorchMissingError as error:
        raise UserError(str(error)) from None


@exit_on_user_error
def main(argv):
    startup.begin(argv)
    if not FLAGS.checkpoint or not FLAGS.workdir:
        raise app.UsageError("--checkpoint and --workdir are required.")
    require_torch()
    imported = run(FLAGS.checkpoint, FLAGS.workdir)
    print("\n".join(summary(imported)))
    print(f"wrote {Path(FLAGS.workdir) / 'checkpoints'}")
