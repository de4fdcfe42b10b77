"""The one rule for non-finite steps, shared by pretraining and fine-tuning.

`train_step` already skips the update of a step whose loss or gradient norm is not finite (its
`is_finite` metric is 0); the loops then stop the run through `raise_if_not_finite`.
"""

from collections.abc import Mapping, Sequence


class NonFiniteError(RuntimeError):
    """The loss or the gradient norm stopped being finite."""


def raise_if_not_finite(
    steps: Sequence[int], fetched_metrics: Sequence[Mapping], where: str = ""
) -> None:
    """Raises NonFiniteError for the first step whose host-side metrics have is_finite == 0."""
    for step, metrics in zip(steps, fetched_metrics, strict=True):
        if not metrics["is_finite"]:
            raise NonFiniteError(
                f"{where}step {step}: loss={metrics['loss']} grad_norm={metrics['grad_norm']} "
                "is not finite; the update was skipped and the run stopped (lower the learning "
                "rate or check the data)."
            )
