"""The flags and checks of the commands that read new molecules (embed, predict), once."""

from pathlib import Path

from absl import flags

from moleblend_jax.errors import UserError

FLAGS = flags.FLAGS


def define_flags(writes: str, run_defaults: bool) -> None:
    """--input, --out (`writes`: what it is), --smiles_column, --id_column, --batch_size and
    --workers; with `run_defaults` the columns and the batch size default to the training
    run's (--batch_size=0)."""
    if run_defaults:
        smiles_default = "the training run's"
        id_default = "the training run's when present"
        batch_size, batch_help = 0, "Molecules per batch; 0 = the training run's."
    else:
        smiles_default, id_default = "'smiles'", "none"
        batch_size, batch_help = 32, "Molecules per batch."
    flags.DEFINE_string("input", None, "Molecules: .csv, .smi or .sdf.")
    flags.DEFINE_string("out", None, f"The {writes} to write.")
    flags.DEFINE_string("smiles_column", "", f"CSV SMILES column; default: {smiles_default}.")
    flags.DEFINE_string("id_column", "", f"CSV id column; default: {id_default}.")
    flags.DEFINE_integer("batch_size", batch_size, batch_help)
    flags.DEFINE_integer("workers", 2, "Featurisation processes.")


def check_flags(writes: str, run_defaults: bool) -> None:
    """UserError for a --batch_size below 1 (0 with `run_defaults`: the run's) or an --out
    that is a directory."""
    if FLAGS.batch_size < 0 or (FLAGS.batch_size == 0 and not run_defaults):
        run = " (0: the run's)" if run_defaults else ""
        raise UserError(f"--batch_size={FLAGS.batch_size}; give a positive number{run}")
    if Path(FLAGS.out).is_dir():
        raise UserError(f"--out={FLAGS.out} is a directory; give the {writes} file to write")
