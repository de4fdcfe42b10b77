"""`python experiments/pretrain.py FLAGS` is `moleblend pretrain FLAGS`
(moleblend_jax/cli/pretrain.py)."""

from moleblend_jax.cli import pretrain, startup

if __name__ == "__main__":
    startup.run(pretrain)
