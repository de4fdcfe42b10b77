"""Optimizer and learning-rate schedule (SPEC 6): the original's Adam, clip and schedule."""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from moleblend_jax.errors import UserError

# Where Adam's eps goes (config.optimizer.eps_placement): "fairseq", the original's (its
# fairseq fork's `Adam`), adds it to sqrt(v) before the bias correction; "optax", optax.adamw's,
# after it. docs/interop.md "Training step for step".
EPS_PLACEMENTS = ("fairseq", "optax")


def make_schedule(
    optimizer_config: ml_collections.ConfigDict, total_steps: int, warmup_steps: int
) -> optax.Schedule:
    """Linear warm-up from 0 to `peak_lr`, then cosine decay to `end_lr` at `total_steps`.

    The step counts are arguments, not config fields, because fine-tuning derives them from
    its epochs and the data set size. As fairseq's cosine schedule with `max_update =
    total_steps`: the first update runs at lr 0, the cosine spans `total_steps - warmup_steps`.
    """
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=optimizer_config.peak_lr,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=optimizer_config.end_lr,
    )


def scale_by_fairseq_adam(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """Adam's direction with eps where fairseq's `Adam.step` puts it, before bias correction:

        sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps),

    which is optax.scale_by_adam with an eps of eps / sqrt(1 - b2^t): 3.2e-7 at t = 1 for
    eps = 1e-8, falling to ~eps only after thousands of steps. Parameters with tiny gradients
    (rare classes, pair-head entries) take visibly smaller early steps than with optax's.

    The state is optax's `ScaleByAdamState` (the same moments), so a checkpoint written with
    either placement resumes with the other.
    """

    def init(params):
        zeros = optax.tree.zeros_like(params)
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros, nu=zeros)

    def update(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        t = count.astype(jnp.float32)
        step_size = jnp.sqrt(1 - b2**t) / (1 - b1**t)
        direction = jax.tree.map(lambda m, v: step_size * m / (jnp.sqrt(v) + eps), mu, nu)
        return direction, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def check_config(optimizer_config: ml_collections.ConfigDict) -> None:
    """UserError for a setting `make_optimizer` cannot build (checked before any data work)."""
    if optimizer_config.eps_placement not in EPS_PLACEMENTS:
        raise UserError(
            f"config.optimizer.eps_placement={optimizer_config.eps_placement!r}; use one of "
            f"{EPS_PLACEMENTS}."
        )


def make_optimizer(
    optimizer_config: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """Global-norm clipping, then Adam with decoupled weight decay times the scheduled lr:

        p <- p - lr_t * (adam_direction + weight_decay * p)

    on every parameter (fairseq's `Adam` decays all of them, biases and norms included). The
    Adam direction places eps as `optimizer_config.eps_placement` says. The state tree is
    optax.adamw's whatever the placement.
    """
    opt = optimizer_config
    check_config(opt)
    if opt.eps_placement == "fairseq":
        adam = scale_by_fairseq_adam(opt.b1, opt.b2, opt.eps)
    else:
        adam = optax.scale_by_adam(opt.b1, opt.b2, opt.eps)
    return optax.chain(
        optax.clip_by_global_norm(opt.grad_clip_norm),
        # optax.adamw's chain, with the Adam direction swapped.
        optax.chain(
            adam,
            optax.add_decayed_weights(opt.weight_decay),
            optax.scale_by_learning_rate(schedule),
        ),
    )


def pretraining_optimizer(
    config: ml_collections.ConfigDict,
) -> tuple[optax.Schedule, optax.GradientTransformation]:
    """(schedule, optimizer) of a pretraining config (`total_steps`, `optimizer.*`)."""
    schedule = make_schedule(config.optimizer, config.total_steps, config.optimizer.warmup_steps)
    return schedule, make_optimizer(config.optimizer, schedule)
