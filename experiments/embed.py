"""`python experiments/embed.py FLAGS` is `moleblend embed FLAGS`
(moleblend_jax/cli/embed.py)."""

from moleblend_jax.cli import embed, startup

if __name__ == "__main__":
    startup.run(embed)
