"""Fine-tuning losses (SPEC 7): masked BCE for classification, masked MSE for regression.

Regression compares in label units by default, as the original: MSE between
`output * std + mean` and the raw label, one scalar mean/std over the train labels
(config.regression_loss "label_units"). "standardised" compares the output with per-task
standardised labels instead: the same minimiser per task, a loss smaller by std^2, which
changes how gradient clipping at 5 and the tasks' relative weights act (docs/model.md).
"""

import dataclasses

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


def finetune_loss_fn(
    model: nn.Module, classification: bool, standardizer: "Standardizer"
) -> LossFn:
    """(params, batch, rngs) -> (loss, {"loss"}) for `train.step.jit_train_step`.

    Classification: masked BCE on logits. Regression: masked MSE between
    `standardizer.loss_predictions(output)` and the batch's labels (`standardizer.encode`d).
    """

    def loss_fn(params, batch, rngs):
        out = model.apply({"params": params}, batch, train=True, rngs=rngs)
        labels, mask = batch["labels"], batch["label_mask"]
        if classification:
            loss = masked_bce_loss(out, labels, mask)
        else:
            loss = masked_mse_loss(standardizer.loss_predictions(out), labels, mask)
        return loss, {"loss": loss}

    return loss_fn


REGRESSION_LOSSES = ("label_units", "standardised")


@dataclasses.dataclass(frozen=True)
class Standardizer:
    """Train-label mean/std [T] of a regression task (identity for classification): one scalar
    repeated ("label_units") or per task ("standardised"), see the module docstring.
    `in_label_units`: the loss compares outputs mapped to label units with the raw labels."""

    mean: np.ndarray
    std: np.ndarray
    in_label_units: bool = True

    @classmethod
    def from_train_labels(
        cls, train_labels: np.ndarray, regression_loss: str | None
    ) -> "Standardizer":
        """[M, T] train labels (NaN = missing) -> the statistics `regression_loss` asks for;
        None (classification) gives the identity."""
        if regression_loss not in (None, *REGRESSION_LOSSES):
            raise ValueError(
                f"config.regression_loss must be one of {REGRESSION_LOSSES}, "
                f"not {regression_loss!r}."
            )
        in_label_units = regression_loss in (None, "label_units")
        num_tasks = train_labels.shape[1]
        if regression_loss is None:
            mean, std = 0.0, 1.0
        else:
            axis = None if in_label_units else 0
            mean, std = np.nanmean(train_labels, axis=axis), np.nanstd(train_labels, axis=axis)
        std = np.where(std > 0, std, 1.0)
        return cls(
            mean=np.broadcast_to(mean, (num_tasks,)).astype(np.float32),
            std=np.broadcast_to(std, (num_tasks,)).astype(np.float32),
            in_label_units=in_label_units,
        )

    def encode(self, batch: dict) -> dict:
        """The batch with the labels the loss compares with (zero where unlabelled)."""
        labels = batch["labels"]
        if not self.in_label_units:
            labels = (labels - self.mean) / self.std
        labels = np.where(batch["label_mask"], labels, 0.0).astype(np.float32)
        return {**batch, "labels": labels}

    def decode(self, outputs):
        """[B, T] model outputs -> predictions in label units."""
        return outputs * self.std + self.mean

    def loss_predictions(self, outputs):
        """[B, T] model outputs -> what the loss compares with `encode`'s labels."""
        return self.decode(outputs) if self.in_label_units else outputs
