"""Fine-tunes a (pretrained) MoleBLEND encoder on one data set over several seeds.

  moleblend finetune --config=configs/finetune.py --config.dataset=esol \
      [--config.init_checkpoint=PRETRAIN_WORKDIR/checkpoints] --workdir=DIR
  moleblend finetune --config=configs/finetune.py:tiny ...   # CPU-sized model
  (the same: python experiments/finetune.py --config=configs/finetune.py ...)

Writes DIR/results.json (per seed and aggregated; model selection on the validation split
only), DIR/metrics.jsonl (one line per seed and epoch), DIR/tensorboard/seed_<k> (one run per
seed), DIR/split_<kind>_seed<k>.json (the record ids of each split made; with
--config.split_file=FILE that split is read instead and nothing is written) and the data set's
shards, built once, in DIR/data/<dataset>. Prediction (moleblend predict) reads
DIR/predictor.json and DIR/checkpoints/seed_<k> (the best-validation params of each seed).
The run writes in DIR/runs/<run_id> and becomes DIR's run (the names above are links through
DIR/current) only when it finishes (moleblend_jax/finetune/workdir.py); DIR is locked while
it runs, and a rerun on other data needs --config.overwrite=true.

Your own CSV or SDF: --config.dataset=csv (or sdf) --config.dataset_path=FILE
[--config.smiles_column=smiles --config.label_columns=a,b --config.task_type=regression
--config.id_column=name --config.split_column=split]; see moleblend_jax/configs/finetune.py.
Mistakes in the file or flags are one line on stderr (exit status 2).
"""

from absl import flags, logging

from moleblend_jax.cli import startup
from moleblend_jax.errors import exit_on_user_error

FLAGS = flags.FLAGS
MALLOC_TUNABLES = True  # Restart with host_allocator's settings (CPU step time).


def define_flags() -> None:
    startup.define_config_and_workdir("configs/finetune.py[:variant].", "Output directory.")


@exit_on_user_error
def main(argv):
    startup.begin(argv, guard_transfers=True)
    from moleblend_jax.finetune import protocol

    results = protocol.run(FLAGS.config, FLAGS.workdir)
    logging.info(
        "%s %s: test %.4f +- %.4f (valid %.4f)",
        results["dataset"],
        results["metric"],
        results["test_mean"],
        results["test_std"],
        results["valid_mean"],
    )
