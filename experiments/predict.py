"""Predicts new molecules with the fine-tuned seeds of a fine-tuning workdir.

  python experiments/predict.py --workdir=FINETUNE_DIR --input=new.csv --out=predictions.csv
  (--input: .csv with a SMILES column, .smi, or .sdf; [--smiles_column=] [--id_column=])

Writes one row per input row, in input order: `id` (the id column, else the training run's
id column when the file has it, SDF title or .smi name, else the 0-based row), `smiles` (as
given), then per task `<task>` (the ensemble mean over the seeds, in label units;
classification: the probability of 1), `<task>_std` (the std over seeds, ddof 0) and
`<task>_seed<k>`, and `error`: why a molecule could not be featurised (its predictions are
empty). Mistakes in the input or flags are one line on stderr (exit status 2).
"""

import os
import sys
from pathlib import Path

from moleblend_jax.host_allocator import reexec_with_malloc_tunables

if __name__ == "__main__":  # First thing: glibc reads malloc settings only at start-up.
    reexec_with_malloc_tunables()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402

if __package__ in (None, ""):  # Run as a script from a checkout: make the package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moleblend_jax.errors import exit_on_user_error  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The fine-tuning workdir (experiments/finetune.py).")
flags.DEFINE_string("input", None, "Molecules to predict: .csv, .smi or .sdf.")
flags.DEFINE_string("out", None, "Predictions CSV to write.")
flags.DEFINE_string("smiles_column", "", "CSV SMILES column; default: the training run's.")
flags.DEFINE_string("id_column", "", "CSV id column; default: the training run's when present.")
flags.DEFINE_integer("batch_size", 0, "Molecules per batch; 0 = the training run's.")
flags.DEFINE_integer("workers", 2, "Featurisation processes.")
flags.mark_flags_as_required(["workdir", "input", "out"])


def csv_columns(path: str, manifest: dict) -> tuple[str, str]:
    """(smiles column, id column) for a CSV input: the flags, else the training run's where the
    file has them."""
    import pandas as pd

    from moleblend_jax.errors import UserError

    if not path.lower().endswith((".csv", ".csv.gz")) or not os.path.exists(path):
        return FLAGS.smiles_column, FLAGS.id_column
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable CSV file ({err})") from None
    smiles = FLAGS.smiles_column or (
        manifest["smiles_column"] if manifest["smiles_column"] in header else ""
    )
    ids = FLAGS.id_column or (manifest["id_column"] if manifest["id_column"] in header else "")
    return smiles, ids


def prediction_table(rows, predictions, task_names, seeds):
    """Featurised rows and [S, M_valid, T] predictions -> the output DataFrame (one row per
    input row)."""
    import numpy as np
    import pandas as pd

    valid = np.asarray(rows.valid)
    full = np.full((len(seeds), len(valid), len(task_names)), np.nan, np.float32)
    full[:, valid] = predictions
    table = {"id": rows.row_ids(), "smiles": rows.inputs}
    with np.errstate(invalid="ignore"):
        mean, std = full.mean(axis=0), full.std(axis=0)
    for t, task in enumerate(task_names):
        table[task] = mean[:, t]
        table[f"{task}_std"] = std[:, t]
        for s, seed in enumerate(seeds):
            table[f"{task}_seed{seed}"] = full[s, :, t]
    table["error"] = rows.errors
    return pd.DataFrame(table)


def write_predictions(out: Path, table) -> None:
    """The table as CSV, whole or not at all: a full disk is a one-line error naming `out`
    and leaves no partial file (`atomic.writing`)."""
    from moleblend_jax import atomic

    with atomic.writing(out) as handle:
        table.to_csv(handle, index=False)


@exit_on_user_error
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import logging

    from moleblend_jax.data import featurize
    from moleblend_jax.errors import UserError
    from moleblend_jax.train import checkpoint

    if FLAGS.batch_size < 0:
        raise UserError(f"--batch_size={FLAGS.batch_size}; give a positive number (0: the run's)")
    if Path(FLAGS.out).is_dir():
        raise UserError(f"--out={FLAGS.out} is a directory; give the CSV file to write")
    checkpoint.quiet_orbax_info_logs()
    # JAX's probe for a TPU logs an INFO line; a user's mistake should be the only line.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    from moleblend_jax.finetune import predictor as predictor_lib

    manifest, _ = predictor_lib.read_manifest(FLAGS.workdir)
    smiles_column, id_column = csv_columns(FLAGS.input, manifest)
    items = featurize.input_items(FLAGS.input, smiles_column, id_column)
    if manifest["use_3d"]:
        conformers = "file" if FLAGS.input.lower().endswith((".sdf", ".sdf.gz")) else "rdkit"
    else:
        conformers = "none"
    rows = featurize.featurize(
        items, conformers, manifest["max_atoms"], FLAGS.workers, True, manifest["use_3d"]
    )
    rows.require_any_valid(FLAGS.input)
    records = [r for r in rows.records if r is not None]
    model = predictor_lib.Predictor.load(FLAGS.workdir)
    predictions = model.predict(records, FLAGS.batch_size or None, progress=True)
    table = prediction_table(rows, predictions, model.task_names, model.seeds)
    out = Path(FLAGS.out)
    write_predictions(out, table)
    failed = int((~table["error"].eq("")).sum())
    print(f"wrote {out}: {len(table)} rows ({failed} could not be featurised)")


if __name__ == "__main__":
    app.run(main)
