"""`--space=configs/sweep.py`: defined in moleblend_jax/configs/sweep.py."""

from moleblend_jax.configs.sweep import get_config

__all__ = ["get_config"]
