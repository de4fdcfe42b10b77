"""Build TFRecord shards for moleblend-jax (docs/data.md).

  moleblend build-shards --input=qm9 --output=/data/qm9 --workers=2
  moleblend build-shards --input=moses --output=DIR --limit=100000  # RDKit conformers
  moleblend build-shards --input=mols.smi --output=DIR --conformers=rdkit
  moleblend build-shards --input=pcqm4m-v2-train.sdf --output=DIR  # + data.csv.gz
  moleblend build-shards --input=qm9 --output=DIR --runner=beam \
      --beam_pipeline_options=--runner=DataflowRunner,--project=P,--region=R,...

Input format by extension: .smi/.txt (SMILES [name]), .csv (a `smiles` column + numeric label
columns), .sdf(.gz) (coordinates from the file), pcqm4m-v2-train.sdf (+ data.csv.gz labels),
`qm9` (the bundled qm9pack QM9 with DFT coordinates and 12 targets) or `moses` (200,000 bundled
drug-like MOSES SMILES in a seeded random order; RDKit conformers). --runner=beam runs the
same featurisation as an Apache Beam pipeline (default: a DirectRunner of --workers processes);
the output bytes are the same as --runner=local's. The same: python data_prep/build_shards.py.
"""

import json
import logging

from absl import flags

from moleblend_jax.cli import startup
from moleblend_jax.errors import exit_on_user_error

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string(
        "input",
        None,
        "Input file, PCQM4Mv2 directory, or 'qm9' / 'moses' (bundled).",
        required=True,
    )
    flags.DEFINE_string("output", None, "Output directory.", required=True)
    flags.DEFINE_integer("num_shards", 16, "Number of shard files.")
    flags.DEFINE_integer("workers", 2, "Worker processes (output does not depend on it).")
    flags.DEFINE_integer("max_atoms", 256, "Skip molecules with more heavy atoms.")
    flags.DEFINE_enum(
        "conformers",
        None,
        ["rdkit", "none", "file"],
        "Coordinates (default: file if present, else rdkit).",
    )
    flags.DEFINE_integer("limit", None, "Only the first LIMIT source molecules (after --offset).")
    flags.DEFINE_integer("offset", 0, "Skip the first OFFSET source entries (e.g. a held-out set).")
    flags.DEFINE_string(
        "smiles_column", None, "CSV SMILES column (default: a column named smiles)."
    )
    flags.DEFINE_list("label_columns", None, "CSV label columns (default: numeric columns).")
    flags.DEFINE_string("labels_csv", None, "PCQM4Mv2 data.csv.gz (default: next to the SDF).")
    flags.DEFINE_integer("seed", 0, "Seed of RDKit conformers.")
    flags.DEFINE_bool(
        "skip_bad_labels",
        False,
        "Skip CSV rows whose label cell is not a number (counted as bad_label); default: an error.",
    )
    flags.DEFINE_enum(
        "runner",
        "local",
        ["local", "beam"],
        "local: a process pool; beam: an Apache Beam pipeline.",
    )
    flags.DEFINE_list(
        "beam_pipeline_options",
        None,
        "Comma-separated Beam options for --runner=beam, e.g. --runner=FlinkRunner,... "
        "(default: DirectRunner with --workers processes).",
    )


@exit_on_user_error
def main(argv):
    startup.begin(argv)
    from moleblend_jax.data.shards import ShardOptions, build_shards
    from moleblend_jax.data.sources import FileInput

    logging.getLogger("apache_beam").setLevel(logging.WARNING)  # Worker logs: per bundle.
    source = FileInput(
        FLAGS.input,
        smiles_column=FLAGS.smiles_column,
        label_columns=FLAGS.label_columns,
        labels_csv=FLAGS.labels_csv,
        skip_bad_labels=FLAGS.skip_bad_labels,
    )
    options = ShardOptions(
        num_shards=FLAGS.num_shards,
        max_atoms=FLAGS.max_atoms,
        conformers=FLAGS.conformers,
        limit=FLAGS.limit,
        offset=FLAGS.offset,
        seed=FLAGS.seed,
        workers=FLAGS.workers,
        runner=FLAGS.runner,
        pipeline_options=FLAGS.beam_pipeline_options,
    )
    metadata = build_shards(source, FLAGS.output, options)
    summary = {k: metadata[k] for k in ("num_written", "num_skipped", "skipped", "conformers")}
    summary["bytes_per_molecule"] = round(metadata["bytes_per_molecule"], 1)
    print(json.dumps(summary))
