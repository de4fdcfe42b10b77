"""The optimizer against a numpy transcription of the original's (fairseq's Adam, clip, cosine)."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from moleblend_jax.configs import base, finetune
from moleblend_jax.errors import UserError
from moleblend_jax.train import optim

NUM_STEPS, WARMUP = 6, 2


def _optimizer_config(eps_placement: str) -> ml_collections.ConfigDict:
    config = base.get_config().optimizer
    config.peak_lr, config.weight_decay, config.grad_clip_norm = 1e-2, 0.1, 5.0
    config.eps_placement = eps_placement
    return config


def _problem():
    """Params and per-step gradients: one leaf with ordinary gradients (clipped at first), one
    with tiny ones (a rare class's row), where the placement of eps decides the step."""
    rng = np.random.default_rng(0)
    params = {"dense": rng.normal(0, 0.5, (4, 3)), "rare": rng.normal(0, 0.02, (5,))}
    grads = [
        {"dense": rng.normal(0, 4.0 / (t + 1), (4, 3)), "rare": rng.normal(0, 1e-8, (5,))}
        for t in range(NUM_STEPS)
    ]
    return params, grads


def fairseq_adam_numpy(params, grads, lrs, b1, b2, eps, weight_decay, clip_norm):
    """float64 transcription of the original's update: fairseq's `clip_grad_norm_` (scale by
    min(1, max_norm / (norm + 1e-6))), then fairseq/optim/adam.py `Adam.step` per parameter:
    moments, denom = sqrt(v) + eps, step_size = lr sqrt(1 - b2^t) / (1 - b1^t),
    p -= weight_decay lr p, p -= step_size m / denom."""
    p = {k: np.array(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t, (g, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
        norm = math.sqrt(sum(float(np.sum(np.square(x))) for x in g.values()))
        coef = min(1.0, clip_norm / (norm + 1e-6))
        for k in p:
            grad = coef * g[k]
            m[k] = b1 * m[k] + (1 - b1) * grad
            v[k] = b2 * v[k] + (1 - b2) * grad * grad
            denom = np.sqrt(v[k]) + eps
            step_size = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
            p[k] = p[k] - weight_decay * lr * p[k]
            p[k] = p[k] - step_size * m[k] / denom
    return p


def _run(config, params, grads):
    schedule = optim.make_schedule(config, NUM_STEPS, WARMUP)
    tx = optim.make_optimizer(config, schedule)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    state = tx.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for g in grads:
        params, state = step(params, state, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), g))
    lrs = [float(schedule(t)) for t in range(NUM_STEPS)]
    return jax.tree.map(np.asarray, params), lrs


def test_fairseq_placement_follows_the_originals_update_step_for_step():
    params, grads = _problem()
    config = _optimizer_config("fairseq")
    ours, lrs = _run(config, params, grads)
    assert lrs[0] == 0.0 and lrs[WARMUP] == pytest.approx(config.peak_lr)
    want = fairseq_adam_numpy(
        params, grads, lrs, config.b1, config.b2, config.eps, config.weight_decay, 5.0
    )
    for key in params:
        moved = np.abs(want[key] - params[key]).max()
        assert moved > 1e-4, key  # Every leaf moved: the comparison means something.
        # Within 2e-5 of the distance moved: what storing ~0.5-sized params in fp32 allows.
        np.testing.assert_allclose(ours[key], want[key], rtol=0, atol=2e-5 * moved, err_msg=key)

    # optax's placement takes other steps where gradients are tiny: ~half an lr per step on the
    # rare row instead of a few percent.
    optax_params, _ = _run(_optimizer_config("optax"), params, grads)
    np.testing.assert_allclose(optax_params["dense"], want["dense"], rtol=0, atol=1e-5)
    rare_moved = np.abs(want["rare"] - params["rare"])
    assert np.all(np.abs(optax_params["rare"] - params["rare"]) > 5 * rare_moved)


def test_both_placements_keep_optax_adamws_state_tree():
    """So a checkpoint written with either placement (or before the option) resumes."""
    params = {"w": jnp.zeros((2, 3))}
    schedule = optax.constant_schedule(1e-3)
    adamw = optax.chain(optax.clip_by_global_norm(5.0), optax.adamw(schedule)).init(params)
    for placement in optim.EPS_PLACEMENTS:
        state = optim.make_optimizer(_optimizer_config(placement), schedule).init(params)
        assert jax.tree.structure(state) == jax.tree.structure(adamw), placement


def test_the_originals_adam_is_the_default_and_other_placements_are_refused():
    assert base.get_config().optimizer.eps_placement == "fairseq"
    assert finetune.get_config().optimizer.eps_placement == "fairseq"
    config = _optimizer_config("torch")
    with pytest.raises(UserError, match=r"eps_placement='torch'; use one of \('fairseq', "):
        optim.make_optimizer(config, optax.constant_schedule(1e-3))
