"""`--config=configs/tiny.py`: the CPU-sized pretraining config (= `configs/base.py:tiny`)."""

from moleblend_jax.configs.base import get_config as _get_base_config


def get_config():
    return _get_base_config("tiny")
