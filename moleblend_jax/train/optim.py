"""Optimizer and learning-rate schedule (SPEC 6)."""

import ml_collections
import optax


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up from 0 to `peak_lr`, then cosine decay to `end_lr` at `total_steps`."""
    opt = config.optimizer
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=opt.peak_lr,
        warmup_steps=opt.warmup_steps,
        decay_steps=max(config.total_steps, opt.warmup_steps + 1),
        end_value=opt.end_lr,
    )


def make_optimizer(
    config: ml_collections.ConfigDict, schedule: optax.Schedule | None = None
) -> optax.GradientTransformation:
    """Global-norm clipping followed by AdamW with decoupled weight decay."""
    opt = config.optimizer
    return optax.chain(
        optax.clip_by_global_norm(opt.grad_clip_norm),
        optax.adamw(
            learning_rate=schedule or make_schedule(config),
            b1=opt.b1,
            b2=opt.b2,
            eps=opt.eps,
            weight_decay=opt.weight_decay,
        ),
    )
