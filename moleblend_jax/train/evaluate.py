"""Held-out pretraining loss: the training objective without dropout, on fixed draws.

Every evaluation uses the same blend masks and coordinate noise per batch index, so the
held-out loss of two steps differs only by the parameters.
"""

import functools
from collections.abc import Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from moleblend_jax.train import sharding
from moleblend_jax.train.losses import pretraining_losses


def eval_metrics(
    params,
    batch: Mapping[str, jax.Array],
    rng: jax.Array,
    *,
    model: nn.Module,
    loss_weights: Mapping[str, float],
) -> dict[str, jax.Array]:
    """Float32 scalar loss terms and accuracies of one batch (train=False: no dropout)."""
    blend_key, noise_key = jax.random.split(rng)
    noise = model.config.coord_noise_std * jax.random.normal(
        noise_key, batch["coords"].shape, jnp.float32
    )
    outputs = model.apply(
        {"params": params},
        batch,
        train=False,
        rngs={"blend": blend_key},
        blend={"coord_noise": noise},  # The model zeroes it outside real 3D atoms.
    )
    return pretraining_losses(outputs, batch, loss_weights)[1]


def jit_eval_step(model: nn.Module, loss_weights, params_shardings, mesh):
    """`eval_metrics` compiled over `mesh`: params in their shardings, batch split along the
    batch dimension, rng and metrics replicated."""
    return jax.jit(
        sharding.traced_with_batch_mesh(
            functools.partial(eval_metrics, model=model, loss_weights=dict(loss_weights)),
            mesh,
            "eval_metrics",
        ),
        in_shardings=(params_shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
        out_shardings=sharding.replicated(mesh),
    )


def evaluate(
    eval_step, params, batches: Iterable[Mapping[str, np.ndarray]], rngs: Sequence[jax.Array], mesh
) -> dict[str, float]:
    """Mean of each metric over `batches` (process-local numpy), the i-th batch drawn with
    rngs[i]; keys prefixed "eval_"."""
    fetched = jax.device_get(
        [
            eval_step(params, sharding.global_batch(batch, mesh), rng)
            for batch, rng in zip(batches, rngs, strict=False)
        ]
    )
    return {f"eval_{k}": float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
