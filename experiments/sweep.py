"""`python experiments/sweep.py FLAGS` is `moleblend sweep FLAGS` (moleblend_jax/cli/sweep.py)."""

from moleblend_jax.cli import startup, sweep

if __name__ == "__main__":
    startup.run(sweep)
