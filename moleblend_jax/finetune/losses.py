"""Fine-tuning losses (SPEC 7): masked BCE for classification, MSE on standardised targets."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from moleblend_jax.train.step import LossFn


def masked_bce_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """[B, T] logits, {0,1} labels, bool mask -> mean BCE over labelled entries."""
    losses = optax.sigmoid_binary_cross_entropy(logits, labels)
    return jnp.sum(jnp.where(mask, losses, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def masked_mse_loss(preds: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """[B, T] predictions and standardised targets -> mean squared error over labelled entries."""
    return jnp.sum(jnp.where(mask, (preds - targets) ** 2, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def finetune_loss_fn(model: nn.Module, classification: bool) -> LossFn:
    """(params, batch, rngs) -> (loss, {"loss"}) for `train.step.jit_train_step`."""
    masked_loss = masked_bce_loss if classification else masked_mse_loss

    def loss_fn(params, batch, rngs):
        out = model.apply({"params": params}, batch, train=True, rngs=rngs)
        loss = masked_loss(out, batch["labels"], batch["label_mask"])
        return loss, {"loss": loss}

    return loss_fn


class Standardizer:
    """Per-task train mean/std for regression targets (identity for classification)."""

    def __init__(self, train_labels: np.ndarray, enabled: bool):
        self.mean = np.nanmean(train_labels, axis=0) if enabled else 0.0
        std = np.nanstd(train_labels, axis=0) if enabled else 1.0
        self.std = np.where(np.asarray(std) > 0, std, 1.0)

    def encode(self, batch):
        return {
            **batch,
            "labels": np.where(
                batch["label_mask"], (batch["labels"] - self.mean) / self.std, 0.0
            ).astype(np.float32),
        }

    def decode(self, preds):
        return preds * self.std + self.mean
