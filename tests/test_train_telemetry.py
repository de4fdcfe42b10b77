"""Throughput in the pretraining log lines (train/telemetry.py) and the analytic FLOP count
behind MFU (model/flops.py)."""

import functools
import time

import jax
import numpy as np
import pytest
from train_testing import small_config

from moleblend_jax.configs import base
from moleblend_jax.data import pipeline
from moleblend_jax.model import flops
from moleblend_jax.train import loop, programs, sharding, telemetry
from moleblend_jax.train.metrics_writer import read_jsonl
from moleblend_jax.train.step import pretraining_loss_fn, train_step


def _slow(make_batches, seconds):
    """make_batches whose training iterator sleeps `seconds` before every batch."""

    @functools.wraps(make_batches)
    def wrapped(*args, **kwargs):
        batches = make_batches(*args, **kwargs)
        if not kwargs.get("shuffle"):  # Held-out batches stay fast.
            return batches
        return (time.sleep(seconds) or batch for batch in batches)

    return wrapped


@pytest.mark.parametrize("input_seconds", [0.0, 0.5])
def test_every_log_line_has_throughput_and_a_slow_input_shows(
    qm9_shards, tmp_path, monkeypatch, input_seconds
):
    monkeypatch.setattr(pipeline, "make_batches", _slow(pipeline.make_batches, input_seconds))
    config = small_config(qm9_shards, total_steps=6, log_every=3, eval_every=0, checkpoint_every=6)
    loop.train_and_evaluate(config, tmp_path)
    rows = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [3, 6]
    for row in rows:
        assert all(np.isfinite(row[key]) for key in telemetry.TIMING_KEYS), row
        assert row["molecules_per_second"] > 0 and 0 <= row["input_wait_fraction"] <= 1
        assert row["hfu"] > 0 and row["mfu"] > 0
    if input_seconds:  # The steps take milliseconds: the waits are nearly all the time.
        assert rows[-1]["input_wait_fraction"] > 0.5
        assert rows[-1]["step_seconds"] >= input_seconds
    else:
        assert rows[-1]["input_wait_fraction"] < 0.5


def test_step_clock_leaves_out_compiling_steps_and_non_step_time():
    clock = telemetry.StepClock()
    clock.step_done(molecules=8, model_flops=10.0, hardware_flops=12.0, compiled=True)
    for _ in range(3):
        with clock.waiting_for_input():
            time.sleep(0.02)
        time.sleep(0.01)
        clock.step_done(molecules=8, model_flops=10.0, hardware_flops=12.0)
    time.sleep(0.2)  # An evaluation.
    clock.restart()
    stats = clock.interval(peak_flops=1e3)
    assert 0.03 <= stats["step_seconds"] < 0.1
    assert 0.5 < stats["input_wait_fraction"] < 0.8
    assert stats["molecules_per_second"] == pytest.approx(8 / stats["step_seconds"], rel=0.3)
    assert stats["hfu"] / stats["mfu"] == pytest.approx(1.2)
    assert clock.interval(peak_flops=1e3) == {}  # Nothing since.


def _matmul_flops_of(fn, *args) -> int:
    """FLOPs of every dot_general in `fn`'s jaxpr (forward and backward): 2 per multiply-add."""

    def walk(jaxpr):
        total = 0
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                (contract, _), _ = eqn.params["dimension_numbers"]
                lhs = eqn.invars[0].aval.shape
                total += (
                    2 * np.prod(eqn.outvars[0].aval.shape) * np.prod([lhs[i] for i in contract])
                )
            for param in eqn.params.values():
                inner = getattr(param, "jaxpr", param)
                if isinstance(inner, jax.extend.core.Jaxpr):
                    total += walk(inner)
        return total

    return int(walk(jax.make_jaxpr(fn)(*args).jaxpr))


@pytest.mark.parametrize(
    "variant, batch_size, num_atoms, xla_tolerance",
    # Tiny is 8-9% elementwise work by XLA's count (pair tensors, norms, softmax), which
    # MFU does not count; base is matmul-bound.
    [("tiny", 16, 32, 0.10), ("base", 4, 64, 0.05)],
)
def test_analytic_flops_match_the_models_matmuls_and_xla(
    variant, batch_size, num_atoms, xla_tolerance
):
    config = base.get_config(variant)
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
    built = programs.build_programs(config, mesh)
    step = functools.partial(
        train_step,
        loss_fn=pretraining_loss_fn(built.model, dict(config.loss_weights)),
        tx=built.tx,
        schedule=built.schedule,
    )
    batch = programs.batch_spec(batch_size, num_atoms, mesh)
    analytic = flops.train_step_flops(config.model, batch_size, num_atoms)
    assert analytic == pytest.approx(_matmul_flops_of(step, built.layout.abstract, batch), rel=0.01)
    xla = built.train_step.lower(built.layout.abstract, batch).compile().cost_analysis()["flops"]
    assert analytic == pytest.approx(xla, rel=xla_tolerance)
