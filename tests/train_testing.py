"""Shared helpers for the training tests: a small config and a small real QM9 shard set."""

import pathlib

from moleblend_jax.configs import base

REPO = pathlib.Path(__file__).resolve().parents[1]


def small_config(data_dir=None, **overrides):
    """The tiny variant shrunk further so a step costs milliseconds on one CPU core."""
    config = base.get_config("tiny")
    m = config.model
    m.num_layers, m.hidden_dim, m.ffn_dim, m.num_heads, m.num_kernels = 2, 32, 32, 4, 16
    m.dtype = "float32"
    config.batch_size = 16
    config.total_steps = 8
    config.optimizer.warmup_steps = 2
    config.optimizer.peak_lr = 1e-3
    config.data.buckets = (16,)
    config.data.max_atoms = 16
    config.data.dir = str(data_dir) if data_dir else None
    config.log_every = 2
    config.checkpoint_every = 4
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def random_params(config, seed: int = 0) -> dict:
    """Params of config.model's MoleBlend filled with N(0, 0.1^2) numpy draws: random values
    are enough for a checkpoint to restore (and an eager init is slow)."""
    import jax
    import numpy as np
    from flax import linen as nn

    from moleblend_jax import model as model_lib
    from moleblend_jax.train import loop

    model = model_lib.MoleBlend(config=config.model)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(1), loop.dummy_batch(1, 8)))
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype),
        nn.unbox(shapes["params"]),
    )


def pretraining_grad_fn(model, batch: dict, params: dict):
    """(params, key) -> ((loss, (metrics, outputs)), grads): value_and_grad of the weighted
    pretraining loss (train mode, all three random streams from `key`), compiled with XLA:CPU's
    backend optimisation off, which keeps a one-backward-pass test's compile cheap. Use "rbg"
    keys (jax.random.key(seed, impl="rbg")), also cheap to compile."""
    import jax

    from moleblend_jax.train.losses import pretraining_losses

    weights = base.get_config().loss_weights

    def loss_fn(params, key):
        dropout, blend, noise = jax.random.split(key, 3)
        rngs = {"dropout": dropout, "blend": blend, "noise": noise}
        out = model.apply({"params": params}, batch, train=True, rngs=rngs)
        loss, metrics = pretraining_losses(out, batch, weights)
        return loss, (metrics, out)

    key = jax.random.key(0, impl="rbg")
    return (
        jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
        .lower(params, key)
        .compile({"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})
    )
