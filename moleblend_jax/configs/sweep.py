"""The hyperparameter search space of `moleblend sweep` (the original's: its
wandb_sweep_config/*.yaml, sampled here log-uniformly for the two rates).

  --space=configs/sweep.py (the default) or your own file; override one bound or the choices
  as --space.peak_lr.low=1e-5 or --space.batch_size.choices="(32,64)".

Each entry names the fine-tuning config `field` it sets (dotted) and either `choices` (a
tuple) or `low` / `high` (ints: an integer range) with `log` (sample the log scale).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    space = ml_collections.ConfigDict()
    space.peak_lr = dict(field="optimizer.peak_lr", low=1e-6, high=1e-4, log=True)
    space.batch_size = dict(field="batch_size", choices=(32, 64, 128, 256))
    space.epochs = dict(field="epochs", choices=(40, 60, 80, 100))
    space.weight_decay = dict(field="optimizer.weight_decay", low=1e-7, high=1e-3, log=True)
    return space
