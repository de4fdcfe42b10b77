"""`python data_prep/build_shards.py FLAGS` is `moleblend build-shards FLAGS`: see
moleblend_jax/cli/build_shards.py."""

from moleblend_jax.cli import build_shards, startup

if __name__ == "__main__":
    startup.run(build_shards)
