"""`--config=configs/base.py[:tiny]`: defined in moleblend_jax/configs/base.py."""

from moleblend_jax.configs.base import get_config

__all__ = ["get_config"]
