"""`python experiments/finetune.py FLAGS` is `moleblend finetune FLAGS`
(moleblend_jax/cli/finetune.py)."""

from moleblend_jax.cli import finetune, startup

if __name__ == "__main__":
    startup.run(finetune)
