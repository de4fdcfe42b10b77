"""`python experiments/predict.py FLAGS` is `moleblend predict FLAGS`
(moleblend_jax/cli/predict.py)."""

from moleblend_jax.cli import predict, startup

if __name__ == "__main__":
    startup.run(predict)
