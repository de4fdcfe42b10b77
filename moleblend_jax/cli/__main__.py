"""`python -m moleblend_jax.cli SUBCOMMAND ...`: the same as `moleblend SUBCOMMAND ...`."""

from moleblend_jax.cli.main import main

if __name__ == "__main__":
    main()
