r"""Searches fine-tuning hyperparameters on the validation split only, then scores the chosen
settings on test (Optuna, in process; pip install 'moleblend-jax[sweep]').

  moleblend sweep --config=configs/finetune.py:tiny --config.dataset=esol --workdir=DIR \
      --n_trials=20 [--timeout=3600] [--trial_seeds=1]
  (the same: python experiments/sweep.py --config=configs/finetune.py:tiny ...)

Each trial fine-tunes one point of the space for --trial_seeds seeds (default: the config's
num_seeds) in DIR/trials/trial_<n> and is scored by its seeds' mean validation metric; a
median pruner stops trials that fall behind epoch by epoch. Test is never computed in a trial.
Then the best trial's settings are fine-tuned for config.num_seeds seeds in DIR/final, the
only run scored on test, and DIR/results.json names the chosen trial, its parameters and
every trial. The study lives in DIR/sweep.db (SQLite): rerunning the same command after a kill
resumes it. The space is --space=configs/sweep.py (the original's: peak lr 1e-6..1e-4 log,
batch 32/64/128/256, epochs 40/60/80/100, weight decay 1e-7..1e-3 log); override an entry as
--space.peak_lr.low=1e-5 or --space.epochs.choices="(20,40)", or give your own file.
"""

import os

from absl import flags, logging

from moleblend_jax.cli import startup
from moleblend_jax.errors import exit_on_user_error

FLAGS = flags.FLAGS
MALLOC_TUNABLES = True  # Restart with host_allocator's settings (CPU step time).


def define_flags() -> None:
    from ml_collections import config_flags

    from moleblend_jax.configs import sweep as sweep_space

    startup.define_config_and_workdir(
        "configs/finetune.py[:variant].", "The sweep's directory (study, trials, results)."
    )
    config_flags.DEFINE_config_file(
        "space", os.path.abspath(sweep_space.__file__), "The search space (configs/sweep.py)."
    )
    flags.DEFINE_integer("n_trials", None, "Trials to finish, counting a resumed sweep's.")
    flags.DEFINE_float("timeout", None, "Stop starting trials after this many seconds.")
    flags.DEFINE_integer("trial_seeds", None, "Seeds per trial (default: config.num_seeds).")
    flags.mark_flags_as_required(["n_trials"])


@exit_on_user_error
def main(argv):
    startup.begin(argv, guard_transfers=True)
    from moleblend_jax.finetune import sweep

    sweep.import_optuna()  # A missing extra is said before any data is read.
    results = sweep.run(
        FLAGS.config,
        FLAGS.workdir,
        FLAGS.n_trials,
        FLAGS.space,
        timeout=FLAGS.timeout,
        trial_seeds=FLAGS.trial_seeds,
    )
    logging.info(
        "%s %s: chosen trial %d %s; test %.4f +- %.4f (valid %.4f)",
        results["dataset"],
        results["metric"],
        results["chosen_trial"],
        results["params"],
        results["test_mean"],
        results["test_std"],
        results["valid_mean"],
    )
