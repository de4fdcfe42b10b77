"""`python experiments/aot_compile.py FLAGS` is `moleblend aot FLAGS` (moleblend_jax/cli/aot.py)."""

from moleblend_jax.cli import aot, startup

if __name__ == "__main__":
    startup.run(aot)
