"""Imports an original (fairseq) MoleBLEND checkpoint as this repository's orbax checkpoint.

  python experiments/import_checkpoint.py --checkpoint=checkpoint_best.pt --workdir=DIR
  python experiments/finetune.py --config=moleblend_jax/configs/finetune.py \
      --config.dataset=bbbp --config.init_checkpoint=DIR/checkpoints --workdir=FT_DIR

Writes DIR/checkpoints (step 0, the params only, as `train.checkpoint.restore_params` reads them)
and DIR/model_config.json (the model sizes taken from the checkpoint's cfg), and prints what was
mapped, dropped and cast to float32. Model sizes other than the base ones are printed as
--config.model.* overrides for the fine-tuning command. Needs torch to unpickle
(pip install -e '.[interop]'); without it the command says so and exits with status 2.
Mapping and known differences: docs/interop.md.
"""

import dataclasses
import json
import re
import sys
from pathlib import Path

from absl import app, flags

if __package__ in (None, ""):  # Run as a script from a checkout: make the package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moleblend_jax.configs import base  # noqa: E402
from moleblend_jax.interop import fairseq, fairseq_file  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "The original's checkpoint file (e.g. checkpoint_best.pt).")
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
        raise FileExistsError(f"{directory} already holds a checkpoint; use a new --workdir.")
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


def run(checkpoint: str, workdir: str) -> fairseq.ImportedCheckpoint:
    """Converts `checkpoint`, writes DIR/checkpoints and DIR/model_config.json."""
    imported = fairseq.import_checkpoint(checkpoint)
    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    write_orbax(imported.conversion.params, out.resolve() / "checkpoints")
    config = dataclasses.asdict(imported.model_config)
    (out / "model_config.json").write_text(json.dumps(config, indent=1) + "\n")
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
    """Exits with status 2 and the install command when torch is missing."""
    try:
        fairseq_file.import_torch()
    except fairseq_file.TorchMissingError as error:
        print(error)
        sys.exit(2)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.checkpoint or not FLAGS.workdir:
        raise app.UsageError("--checkpoint and --workdir are required.")
    require_torch()
    from moleblend_jax.train import checkpoint

    checkpoint.quiet_orbax_info_logs()
    imported = run(FLAGS.checkpoint, FLAGS.workdir)
    print("\n".join(summary(imported)))
    print(f"wrote {Path(FLAGS.workdir) / 'checkpoints'}")


if __name__ == "__main__":
    app.run(main)
