"""Predicts new molecules with the fine-tuned seeds of a fine-tuning workdir.

  moleblend predict --workdir=FINETUNE_DIR --input=new.csv --out=predictions.csv
  (--input: .csv with a SMILES column, .smi, or .sdf; [--smiles_column=] [--id_column=])

Writes one row per input row, in input order: `id` (the id column, else the training run's
id column when the file has it, SDF title or .smi name, else the 0-based row), `smiles` (as
given), then per task `<task>` (the ensemble mean over the seeds, in label units;
classification: the probability of 1), `<task>_std` (the std over seeds, ddof 0) and
`<task>_seed<k>`, and `error`: why a molecule could not be featurised (its predictions are
empty). The same: python experiments/predict.py FLAGS. Mistakes in the input or flags are
one line on stderr (exit status 2).
"""

import os
from pathlib import Path

from absl import flags

from moleblend_jax.cli import molecule_input, startup
from moleblend_jax.errors import UserError, exit_on_user_error

FLAGS = flags.FLAGS
MALLOC_TUNABLES = True  # Restart with host_allocator's settings (CPU step time).


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "The fine-tuning workdir (moleblend finetune).")
    molecule_input.define_flags("CSV", run_defaults=True)
    flags.mark_flags_as_required(["workdir", "input", "out"])


def csv_columns(path: str, manifest: dict, smiles_column: str, id_column: str) -> tuple[str, str]:
    """(smiles column, id column) for a CSV input: the given ones, else the training run's where
    the file has them."""
    import pandas as pd

    if not path.lower().endswith((".csv", ".csv.gz")) or not os.path.exists(path):
        return smiles_column, id_column
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable CSV file ({err})") from None
    smiles = smiles_column or (
        manifest["smiles_column"] if manifest["smiles_column"] in header else ""
    )
    ids = id_column or (manifest["id_column"] if manifest["id_column"] in header else "")
    return smiles, ids


def write_predictions(out: Path, table) -> None:
    """The table as CSV, whole or not at all: a full disk is a one-line error naming `out`
    and leaves no partial file (`atomic.writing`)."""
    from moleblend_jax import atomic

    with atomic.writing(out) as handle:
        table.to_csv(handle, index=False)


@exit_on_user_error
def main(argv):
    startup.begin(argv)
    molecule_input.check_flags("CSV", run_defaults=True)
    from moleblend_jax.data import input_rows
    from moleblend_jax.finetune import predictor as predictor_lib

    manifest, _ = predictor_lib.read_manifest(FLAGS.workdir)
    columns = csv_columns(FLAGS.input, manifest, FLAGS.smiles_column, FLAGS.id_column)
    items = input_rows.input_items(FLAGS.input, *columns)
    from_sdf = FLAGS.input.lower().endswith((".sdf", ".sdf.gz"))
    rows = predictor_lib.featurize_for(manifest, items, from_sdf, FLAGS.workers, True)
    rows.require_any_valid(FLAGS.input)
    model = predictor_lib.Predictor.load(FLAGS.workdir)
    table = model.predict_rows(rows, FLAGS.batch_size or None, progress=True)
    out = Path(FLAGS.out)
    write_predictions(out, table)
    failed = int((~table["error"].eq("")).sum())
    print(f"wrote {out}: {len(table)} rows ({failed} could not be featurised)")
