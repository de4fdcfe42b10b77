"""Embeds molecules with a pretrained checkpoint or a fine-tuned workdir's encoder.

  moleblend embed --checkpoint=PRETRAIN_WORKDIR/checkpoints --input=mols.csv \
      --out=embeddings.npz [--conformers=none|rdkit|file] [--atoms] \
      [--config=configs/base.py:tiny]   # only when no model_config.json is beside the checkpoint
  moleblend embed --checkpoint=FINETUNE_DIR --input=mols.smi --out=embeddings.npz
  (the same: python experiments/embed.py FLAGS)

Writes an npz with `ids` [M] (str: id column, SDF title or .smi name, else the 0-based row),
`smiles` [M] (as given), `embeddings` [M, D] float32 (the graph token; NaN rows where invalid),
`valid` [M] bool and `errors` [M] (str, why a row could not be featurised); with --atoms also
`atom_embeddings` [sum N_i, D] and `atom_offsets` [M + 1] (row i's atoms are
atom_embeddings[atom_offsets[i]:atom_offsets[i + 1]], empty where invalid). One row per input
row, in input order. Mistakes in the input or flags are one line on stderr (exit status 2).
"""

from pathlib import Path

from absl import flags

from moleblend_jax.cli import molecule_input, startup
from moleblend_jax.errors import exit_on_user_error

FLAGS = flags.FLAGS
MALLOC_TUNABLES = True  # Restart with host_allocator's settings (CPU step time).


def define_flags() -> None:
    from ml_collections import config_flags

    flags.DEFINE_string("checkpoint", None, "Pretraining checkpoints dir or a fine-tuning workdir.")
    molecule_input.define_flags(".npz", run_defaults=False)
    config_flags.DEFINE_config_file("config", None, "configs/base.py[:variant] of the checkpoint.")
    flags.DEFINE_enum("conformers", None, ["none", "rdkit", "file"], "Default: none (2D).")
    flags.DEFINE_bool("atoms", False, "Also write atom-level embeddings.")
    flags.mark_flags_as_required(["checkpoint", "input", "out"])


def write_npz(path: Path, rows, result, atoms: bool) -> None:
    """Featurised rows and their `inference.Embeddings` -> the npz of the module docstring."""
    import numpy as np

    arrays = dict(
        ids=np.asarray(rows.row_ids(), dtype=str),
        smiles=np.asarray(rows.inputs, dtype=str),
        embeddings=result.graph,
        valid=result.valid,
        errors=np.asarray(result.errors, dtype=str),
    )
    if atoms:
        empty = np.zeros((0, result.graph.shape[1]), np.float32)
        blocks = [a if a is not None else empty for a in result.atoms]
        arrays["atom_embeddings"] = np.concatenate(blocks).astype(np.float32)
        arrays["atom_offsets"] = np.cumsum([0] + [len(b) for b in blocks]).astype(np.int64)
    from moleblend_jax import atomic

    with atomic.writing(path, "wb") as handle:  # A full disk leaves no partial npz.
        np.savez(handle, **arrays)


@exit_on_user_error
def main(argv):
    startup.begin(argv)
    molecule_input.check_flags(".npz", run_defaults=False)
    from moleblend_jax.data import input_rows
    from moleblend_jax.inference import Embedder

    model_config = FLAGS.config.model if FLAGS.config is not None else None
    embedder = Embedder.from_checkpoint(
        FLAGS.checkpoint, FLAGS.conformers, model_config, FLAGS.batch_size
    )
    items = input_rows.input_items(FLAGS.input, FLAGS.smiles_column, FLAGS.id_column)
    rows = embedder.featurize(items, FLAGS.workers, progress=True)
    rows.require_any_valid(FLAGS.input)
    result = embedder.embed_rows(rows, atoms=FLAGS.atoms, progress=True)
    out = Path(FLAGS.out)
    write_npz(out, rows, result, FLAGS.atoms)
    embedded = int(result.valid.sum())
    print(f"wrote {out}: {len(rows.ids)} rows, {embedded} embedded, D={embedder.dim}")
