"""`python experiments/compare.py FLAGS` is `moleblend compare FLAGS`
(moleblend_jax/cli/compare.py)."""

from moleblend_jax.cli import compare, startup

if __name__ == "__main__":
    startup.run(compare)
