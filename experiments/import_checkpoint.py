"""`python experiments/import_checkpoint.py FLAGS` is `moleblend import-checkpoint FLAGS`
(moleblend_jax/cli/import_checkpoint.py)."""

from moleblend_jax.cli import import_checkpoint, startup

if __name__ == "__main__":
    startup.run(import_checkpoint)
