"""`--config=configs/finetune.py[:tiny]`: defined in moleblend_jax/configs/finetune.py."""

from moleblend_jax.configs.finetune import get_config

__all__ = ["get_config"]
