"""The original's training steps in torch next to ours, from the same converted weights.

The torch side drives the mirror of the original (tests/fairseq_mirror.py) with transcriptions,
written here from the facts of the original's fairseq fork (YudiZh/MoleBlend @ b180f1a), of:
- `fairseq.utils.clip_grad_norm_`: the global norm of all gradients, each scaled by
  min(1, max_norm / (norm + 1e-6));
- `fairseq/optim/adam.py` `Adam.step` (what fairseq runs without apex's fused kernels): per
  parameter with a gradient, m and v updated, p -= weight_decay * lr * p, then
  p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps);
- `CosineLRSchedule` (t_mult 1, warmup_init_lr = min_lr = 0): update k runs at lr
  k * peak / warmup during the warm-up, then min_lr + (peak - min_lr) (1 + cos(pi s / period)) / 2
  with s = k - warmup and period = max_update - warmup.
Our side is `train.step.train_step` with `train.optim`'s schedule and optimizer. Both run on
one batch with forced blend masks, node blend and noise, and no dropout (random streams
cannot match draw for draw).

Run as a script, it prints the 8-step differences of issue 33's setting:
  PYTHONPATH=.:tests python tests/fairseq_training.py [--eps_placement=optax]
"""

import argparse
import dataclasses
import functools
import math

import fairseq_harness as fh
import fairseq_mirror as fm
import jax
import jax.numpy as jnp
import numpy as np
import torch

from moleblend_jax.configs import base
from moleblend_jax.interop import fairseq, fairseq_file
from moleblend_jax.model import MoleBlend
from moleblend_jax.train import optim
from moleblend_jax.train.losses import pretraining_losses
from moleblend_jax.train.state import TrainState
from moleblend_jax.train.step import train_step

SIZE = (2, 32, 4, 16)  # layers, D, heads, K: tests/test_interop_fairseq.py's "small".
NO_DROPOUT = dict(attention_dropout=0.0, act_dropout=0.0, droppath_prob=0.0)


@dataclasses.dataclass(frozen=True)
class Setting:
    """Issue 33's: peak lr 1e-3 after 3 warm-up updates, cosine to 0 at update 8."""

    peak_lr: float = 1e-3
    warmup: int = 3
    max_update: int = 8
    weight_decay: float = 0.01
    clip_norm: float = 5.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8


@dataclasses.dataclass
class Trajectory:
    losses: list[float]  # Before each update.
    grad_norms: list[float]  # Before clipping.
    lrs: list[float]
    params: dict  # After the last update, in our tree.


def cosine_lr(update: int, s: Setting) -> float:
    """fairseq's CosineLRSchedule after `update` updates (the lr that update runs at)."""
    if update < s.warmup:
        return update * s.peak_lr / s.warmup
    progress = (update - s.warmup) / (s.max_update - s.warmup)
    return 0.5 * s.peak_lr * (1 + math.cos(math.pi * progress))


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> float:
    """fairseq's clip: -> the norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale)
    return float(norm)


class FairseqAdam:
    """fairseq's `Adam.step` in fp32, with the lr passed per step (its scheduler sets it)."""

    def __init__(self, params: list[torch.Tensor], s: Setting):
        self.params, self.s = params, s
        self.moments: dict[int, tuple[int, torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def step(self, lr: float) -> None:
        b1, b2 = self.s.b1, self.s.b2
        for index, p in enumerate(self.params):
            if p.grad is None:  # Never in the loss (the HOMO-LUMO head): no state, no decay.
                continue
            t, m, v = self.moments.get(index, (0, torch.zeros_like(p), torch.zeros_like(p)))
            t, g = t + 1, p.grad
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            self.moments[index] = (t, m, v)
            p.mul_(1 - self.s.weight_decay * lr)
            p.sub_(lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (v.sqrt() + self.s.eps))


def loss_weights() -> dict[str, float]:
    return dict(base.get_config().loss_weights)


def make_original(seed: int = 0) -> tuple[torch.nn.Module, argparse.Namespace]:
    """The mirror with trained-like weights (`original_style_init`) and no dropout."""
    args = fm.make_args(*SIZE, **NO_DROPOUT)
    model = fm.Model(args, unit_eps=None)
    fh.original_style_init(model, seed)
    return model, args


def torch_trajectory(
    model, args, batch: dict, blend: dict, s: Setting, num_steps: int
) -> Trajectory:
    """`num_steps` of the original's training on one batch; `model` (made from `args`) is
    trained in place."""
    data = fh.original_batch(batch, batch["coords"] + blend["coord_noise"])
    clean = np.where(batch["atom_mask"][..., None], batch["coords"], 0.0)
    pair = torch.from_numpy(blend["pair_modality"]).long()
    node = torch.from_numpy(blend["node_blend_3d"])
    params = list(model.parameters())
    adam, weights = FairseqAdam(params, s), loss_weights()
    losses, norms, lrs = [], [], []
    for update in range(num_steps):
        model.zero_grad(set_to_none=True)
        out = model(data, pair_modality=pair, node_3d=node)
        terms = fh.criterion_losses(out, data, clean, blend["coord_noise"], blend["node_blend_3d"])
        loss = sum(w * terms[f"{name}_loss"] for name, w in weights.items())
        loss.backward()
        norms.append(clip_grad_norm(params, s.clip_norm))
        lrs.append(cosine_lr(update, s))
        adam.step(lrs[-1])
        losses.append(loss.item())
    return Trajectory(losses, norms, lrs, ours_from_original(model, args))


def ours_from_original(model, args) -> dict:
    model_config, tables = fairseq_file.model_config_from_cfg({"model": args})
    state_dict = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return fairseq.params_from_state_dict(state_dict, model_config, tables)


def optimizer_config(s: Setting, eps_placement: str):
    config = base.get_config().optimizer
    config.peak_lr, config.end_lr, config.warmup_steps = s.peak_lr, 0.0, s.warmup
    config.b1, config.b2, config.eps = s.b1, s.b2, s.eps
    config.weight_decay, config.grad_clip_norm = s.weight_decay, s.clip_norm
    if "eps_placement" in config:  # Absent before issue 33 (measuring the base commit).
        config.eps_placement = eps_placement
    return config


def jax_trajectory(
    state_dict: dict,
    args,
    batch: dict,
    blend: dict,
    s: Setting,
    num_steps: int,
    eps_placement: str = "fairseq",
) -> Trajectory:
    """`num_steps` of our train step from the original's weights, converted."""
    model_config, tables = fairseq_file.model_config_from_cfg({"model": args})
    model_config = dataclasses.replace(model_config, denoise_attention_dropout=0.0)
    params = fairseq.params_from_state_dict(state_dict, model_config, tables)
    model, weights = MoleBlend(model_config), loss_weights()

    def loss_fn(params, batch, rngs):
        out = model.apply({"params": params}, batch, train=True, blend=blend, rngs=rngs)
        return pretraining_losses(out, batch, weights)

    config = optimizer_config(s, eps_placement)
    schedule = optim.make_schedule(config, s.max_update, s.warmup)
    tx = optim.make_optimizer(config, schedule)
    params = jax.tree.map(jnp.asarray, params)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(0),
    )
    # XLA:CPU's backend optimisation off: a several-times cheaper compile, the same fp32 math
    # up to rounding (as tests/train_testing.py's pretraining_grad_fn).
    step = (
        jax.jit(functools.partial(train_step, loss_fn=loss_fn, tx=tx, schedule=schedule))
        .lower(state, batch)
        .compile({"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})
    )
    losses, norms, lrs = [], [], []
    for _ in range(num_steps):
        state, metrics = step(state, batch)
        metrics = jax.device_get(metrics)
        losses.append(float(metrics["loss"]))
        norms.append(float(metrics["grad_norm"]))
        lrs.append(float(metrics["learning_rate"]))
    return Trajectory(losses, norms, lrs, jax.tree.map(np.asarray, jax.device_get(state.params)))


def trajectories(
    num_steps: int, s: Setting = Setting(), eps_placement: str = "fairseq"
) -> tuple[Trajectory, Trajectory]:
    """(original's, ours) from the same trained-like weights and batch."""
    batch, blend = fh.sample_molecules()
    model, args = make_original()
    state_dict = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    ours = jax_trajectory(state_dict, args, batch, blend, s, num_steps, eps_placement)
    original = torch_trajectory(model, args, batch, blend, s, num_steps)
    return original, ours


def differences(original: Trajectory, ours: Trajectory) -> dict:
    """Per step: |loss difference| / |loss|; per leaf of our tree after the last step:
    max |difference| / max |original's value|; and the worst leaf."""
    loss = [abs(a - b) / abs(a) for a, b in zip(original.losses, ours.losses, strict=True)]
    flat_original = dict(jax.tree_util.tree_leaves_with_path(original.params))
    per_leaf = {}
    for path, value in jax.tree_util.tree_leaves_with_path(ours.params):
        reference = np.asarray(flat_original[path], np.float64)
        scale = max(float(np.abs(reference).max()), 1e-12)
        per_leaf[jax.tree_util.keystr(path)] = float(np.abs(value - reference).max()) / scale
    worst = max(per_leaf, key=per_leaf.get)
    return dict(loss=loss, params=per_leaf, worst_leaf=worst, worst_param=per_leaf[worst])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eps_placement", default="fairseq", choices=("fairseq", "optax"))
    parser.add_argument("--steps", type=int, default=8)
    flags = parser.parse_args()
    original, ours = trajectories(flags.steps, eps_placement=flags.eps_placement)
    diff = differences(original, ours)
    print(f"lr: original {original.lrs}\n    ours     {[round(x, 8) for x in ours.lrs]}")
    print(f"step-0 grad norm: original {original.grad_norms[0]:.6f}, ours {ours.grad_norms[0]:.6f}")
    print("loss relative difference per step:", " ".join(f"{x:.1e}" for x in diff["loss"]))
    print(f"max parameter difference / scale: {diff['worst_param']:.2e} ({diff['worst_leaf']})")


if __name__ == "__main__":
    main()
