"""Optimizer and learning-rate schedule (SPEC 6)."""

import ml_collections
import optax


def make_schedule(
    optimizer_config: ml_collections.ConfigDict, total_steps: int, warmup_steps: int
) -> optax.Schedule:
    """Linear warm-up from 0 to `peak_lr`, then cosine decay to `end_lr` at `total_steps`.

    The step counts are arguments, not config fields, because fine-tuning derives them from
    its epochs and the data set size.
    """
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=optimizer_config.peak_lr,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=optimizer_config.end_lr,
    )


def make_optimizer(
    optimizer_config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """Global-norm clipping followed by AdamW with decoupled weight decay."""
    opt = optimizer_config
    return optax.chain(
        optax.clip_by_global_norm(opt.grad_clip_norm),
        optax.adamw(
            learning_rate=schedule,
            b1=opt.b1,
            b2=opt.b2,
            eps=opt.eps,
            weight_decay=opt.weight_decay,
        ),
    )


def pretraining_optimizer(
    config: ml_collections.ConfigDict,
) -> tuple[optax.Schedule, optax.GradientTransformation]:
    """(schedule, optimizer) of a pretraining config (`total_steps`, `optimizer.*`)."""
    schedule = make_schedule(config.optimizer, config.total_steps, config.optimizer.warmup_steps)
    return schedule, make_optimizer(config.optimizer, schedule)
