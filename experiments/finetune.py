"""Fine-tunes a (pretrained) MoleBLEND encoder on one data set over several seeds.

  python experiments/finetune.py --config=configs/finetune.py --config.dataset=esol \
      [--config.init_checkpoint=PRETRAIN_WORKDIR/checkpoints] --workdir=DIR
  python experiments/finetune.py --config=configs/finetune.py:tiny ...   # CPU-sized model

Writes DIR/results.json (per seed and aggregated; model selection on the validation split
only), DIR/metrics.jsonl (one line per seed and epoch), DIR/tensorboard/seed_<k> (one run per
seed), DIR/split_<kind>_seed<k>.json (the record ids of each split made; with
--config.split_file=FILE that split is read instead and nothing is written) and the data set's
shards, built once, in DIR/data/<dataset>. Prediction (experiments/predict.py) reads
DIR/predictor.json and DIR/checkpoints/seed_<k> (the best-validation params of each seed).
The run writes in DIR/runs/<run_id> and becomes DIR's run (the names above are links through
DIR/current) only when it finishes (moleblend_jax/finetune/workdir.py); DIR is locked while
it runs, and a rerun on other data needs --config.overwrite=true.

Your own CSV or SDF: --config.dataset=csv (or sdf) --config.dataset_path=FILE
[--config.smiles_column=smiles --config.label_columns=a,b --config.task_type=regression
--config.id_column=name --config.split_column=split]; see moleblend_jax/configs/finetune.py.
Mistakes in the file or flags are one line on stderr (exit status 2).
"""

import os

from moleblend_jax.host_allocator import reexec_with_malloc_tunables

if __name__ == "__main__":  # First thing: glibc reads malloc settings only at start-up.
    reexec_with_malloc_tunables()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from moleblend_jax.errors import exit_on_user_error  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "configs/finetune.py[:variant].")
flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


@exit_on_user_error
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import logging as py_logging

    import jax

    from moleblend_jax.finetune import trainer

    # JAX's probe for a TPU logs an INFO line; a user's mistake should be the only line.
    py_logging.getLogger("jax._src.xla_bridge").setLevel(py_logging.WARNING)
    from moleblend_jax.train import checkpoint

    checkpoint.quiet_orbax_info_logs()
    # Every host <-> device transfer must be explicit (device_put, global_batch, device_get).
    jax.config.update("jax_transfer_guard", "disallow")
    results = trainer.run(FLAGS.config, FLAGS.workdir)
    logging.info(
        "%s %s: test %.4f +- %.4f (valid %.4f)",
        results["dataset"],
        results["metric"],
        results["test_mean"],
        results["test_std"],
        results["valid_mean"],
    )


if __name__ == "__main__":
    app.run(main)
