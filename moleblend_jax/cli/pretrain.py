"""Pretrains MoleBLEND.

  moleblend pretrain --config=configs/base.py --workdir=DIR [--config.x=y ...]
  moleblend pretrain --config=configs/base.py:tiny --workdir=DIR   # laptop size
  (the same: python experiments/pretrain.py --config=configs/base.py --workdir=DIR)

With no `--config.data.dir` it builds shards of the bundled QM9 once under DIR/data. Rerunning
with the same workdir resumes from the latest checkpoint. Mistakes in the data or flags are one
line on stderr (exit status 2).
"""

from absl import flags, logging

from moleblend_jax.cli import startup
from moleblend_jax.errors import exit_on_user_error

FLAGS = flags.FLAGS
MALLOC_TUNABLES = True  # Restart with host_allocator's settings (CPU step time).


def define_flags() -> None:
    startup.define_config_and_workdir(
        "Config file, optionally FILE.py:variant.",
        "Where checkpoints, metrics and default data go.",
    )
    flags.DEFINE_string(
        "coordinator_address", None, "host:port of process 0 for multi-process runs."
    )
    flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
    flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")


@exit_on_user_error
def main(argv):
    startup.begin(argv, guard_transfers=True)
    import jax

    from moleblend_jax.train import distributed, loop

    distributed.maybe_initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    logging.info(
        "JAX %s, %d processes, devices: %s", jax.__version__, jax.process_count(), jax.devices()
    )
    final = loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    logging.info("Finished: %s", final)
