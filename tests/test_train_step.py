"""The sharded train step: 8 devices == 1 device, finite-guard, schedule."""

import jax
import numpy as np
import pytest
from jax.sharding import AxisType
from train_testing import small_config

from moleblend_jax import model as model_lib
from moleblend_jax.chem import smiles_to_record
from moleblend_jax.data import pad_batch, pipeline
from moleblend_jax.train import loop, optim, programs, sharding
from moleblend_jax.train import state as state_lib
from moleblend_jax.train.step import jit_train_step, pretraining_loss_fn


def _run_steps(config, devices, batches, num_steps):
    mesh = sharding.make_mesh(config.mesh, devices)
    model = model_lib.MoleBlend(config=config.model)
    schedule, tx = optim.pretraining_optimizer(config)
    example = loop.dummy_batch(len(devices), 16)
    layout = state_lib.state_layout(
        model,
        tx,
        example,
        jax.random.PRNGKey(0),
        mesh,
        config.mesh.rules,
        state_lib.optimizer_state_axis(config.mesh),
    )
    state, shardings = layout.init(), layout.shardings
    step_fn = jit_train_step(
        pretraining_loss_fn(model, dict(config.loss_weights)), tx, schedule, shardings, mesh
    )
    losses = []
    for batch in batches[:num_steps]:
        state, metrics = step_fn(state, sharding.global_batch(batch, mesh))
        losses.append(jax.device_get(metrics))
    return jax.device_get(state), losses


@pytest.fixture(scope="module")
def real_batches(qm9_shards):
    it = pipeline.make_batches(qm9_shards, 16, (16,), seed=0, shuffle=True, repeat=True)
    return [next(it) for _ in range(3)]


def _sharding_test_config():
    config = small_config()
    # Attention key biases have an exactly-zero true gradient (softmax is shift invariant);
    # with Adam's eps at 1e-8 their float-noise gradients (~1e-11, different per reduction
    # order) become updates of ~lr * 1e-3. eps 1e-6 keeps that noise below the tolerance.
    config.optimizer.eps = 1e-6
    return config


@pytest.fixture(scope="module")
def single_device_run(real_batches):
    return _run_steps(_sharding_test_config(), jax.devices()[:1], real_batches, 3)


@pytest.mark.parametrize("mesh_shape", [(8, 1), (2, 4)])
def test_sharded_step_matches_single_device(real_batches, single_device_run, mesh_shape):
    assert jax.device_count() == 8
    state_1, metrics_1 = single_device_run
    config = _sharding_test_config()
    config.mesh.data, config.mesh.fsdp = mesh_shape
    state_8, metrics_8 = _run_steps(config, jax.devices(), real_batches, 3)
    for m1, m8 in zip(metrics_1, metrics_8, strict=True):
        for key in ("loss", "spd_loss", "edge_loss", "direction_loss", "denoise_loss", "grad_norm"):
            np.testing.assert_allclose(m8[key], m1[key], rtol=1e-5, atol=1e-6, err_msg=key)
    jax.tree_util.tree_map_with_path(
        lambda path, a, b: np.testing.assert_allclose(
            a, b, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path)
        ),
        state_8.params,
        state_1.params,
    )
    assert int(state_8.step) == 3


def test_optimizer_state_is_split_over_the_data_axis():
    """ZeRO-1 (config.mesh.shard_optimizer_state): each moment's most major dimension that the
    data axis (with any axis already on it) divides is split over it; parameters keep their
    own sharding."""
    mesh = jax.make_mesh((1, 4, 2), sharding.MESH_AXES, axis_types=(AxisType.Auto,) * 3)

    def split(spec, shape):
        named = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
        return state_lib.split_over(named, shape, "data").spec

    P = jax.sharding.PartitionSpec
    assert split((), (768, 3072)) == P("data", None)  # Row slices: contiguous.
    assert split(("fsdp", None), (768, 3072)) == P(("fsdp", "data"), None)
    assert split(("fsdp", None), (4, 3072)) == P("fsdp", "data")  # 2 x 4 does not divide 4.
    assert split((("data", "fsdp"),), (768,)) == P(("data", "fsdp"))  # Already split over it.
    assert split(("dcn_data",), (768, 64)) == P(("dcn_data", "data"), None)  # Not a substring.
    assert split((), (6,)) == P()  # 4 does not divide it: replicated.
    assert split((), ()) == P()
    config = small_config()
    model = model_lib.MoleBlend(config=config.model)
    _, tx = optim.pretraining_optimizer(config)
    layout = state_lib.state_layout(
        model, tx, loop.dummy_batch(8, 16), jax.random.PRNGKey(0), mesh, config.mesh.rules,
        state_lib.optimizer_state_axis(config.mesh),
    )  # fmt: skip
    kernel = ("encoder", "layer_0", "fc1", "kernel")
    param = layout.shardings.params
    for key in kernel:
        param = param[key]
    moments = [
        leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(layout.shardings.opt_state)
        if tuple(getattr(k, "key", None) for k in path[-4:]) == kernel
    ]
    assert len(moments) == 2 and all("data" in str(m.spec) for m in moments)
    assert "data" not in str(param.spec)


def test_step_changes_params_and_reports_metrics(real_batches):
    config = small_config()
    state, metrics = _run_steps(config, jax.devices()[:1], real_batches, 2)
    assert int(state.step) == 2
    for key in ("loss", "spd_accuracy", "edge_accuracy", "grad_norm", "learning_rate"):
        assert np.isfinite(metrics[-1][key]), key
    # Warm-up: the first step runs at lr 0, the second at peak_lr / warmup_steps.
    assert metrics[0]["learning_rate"] == 0.0
    np.testing.assert_allclose(metrics[1]["learning_rate"], config.optimizer.peak_lr / 2, rtol=1e-6)


def test_non_finite_step_keeps_state(real_batches):
    config = small_config()
    batch = dict(real_batches[0])
    batch["coords"] = np.full_like(batch["coords"], np.nan)
    state_before, _ = _run_steps(config, jax.devices()[:1], real_batches, 1)
    state_after, metrics = _run_steps(config, jax.devices()[:1], [real_batches[0], batch], 2)
    assert metrics[1]["is_finite"] == 0.0
    jax.tree.map(np.testing.assert_array_equal, state_after.params, state_before.params)


def test_schedule_warmup_then_cosine_to_end():
    config = small_config(total_steps=100, **{"optimizer.warmup_steps": 10})
    schedule, _ = optim.pretraining_optimizer(config)
    peak = config.optimizer.peak_lr
    np.testing.assert_allclose(schedule(5), peak / 2, rtol=1e-6)
    np.testing.assert_allclose(schedule(10), peak, rtol=1e-6)
    np.testing.assert_allclose(schedule(55), peak / 2, rtol=1e-5)
    np.testing.assert_allclose(schedule(100), 0.0, atol=1e-12)


def test_bf16_training_follows_the_fp32_loss_curve(real_batches):
    """A looser version of benchmarks/bf16_numerics.json (tiny, 300 steps, within 2% after
    step 50): 30 steps of the small model from the same seed and batches, within 5% after 10.
    """
    batches = [real_batches[i % len(real_batches)] for i in range(30)]
    curves = {}
    for dtype in ("float32", "bfloat16"):
        config = small_config(**{"model.dtype": dtype, "total_steps": 30})
        _, metrics = _run_steps(config, jax.devices()[:1], batches, len(batches))
        curves[dtype] = np.array([float(m["loss"]) for m in metrics])
    fp32, bf16 = curves["float32"], curves["bfloat16"]
    np.testing.assert_allclose(bf16[10:], fp32[10:], rtol=0.05)
    assert not np.array_equal(bf16, fp32)


def test_a_step_across_two_slices_matches_one_slice():
    """With every random draw fixed (no dropout, noise or blend: all pairs and atoms 3D), the
    per-device data parallelism of a multi-slice mesh takes the one-slice step, up to each
    device normalising its own loss: every device gets the same two molecules, so its own
    normalisation is the batch's."""
    deterministic = {
        "model.attention_dropout": 0.0,
        "model.activation_dropout": 0.0,
        "model.denoise_attention_dropout": 0.0,
        "model.stochastic_depth": 0.0,
        "model.coord_noise_std": 0.0,
        "model.node_blend_probs": (0.0, 1.0),
        "model.blend_probs": (0.0, 0.0, 1.0),
    }
    config = small_config(**deterministic)
    pair = [smiles_to_record(s, i, conformers="rdkit") for i, s in enumerate(["CCO", "c1ccccc1O"])]
    records = pair * 8
    batches = [pad_batch(records, 16, 16)] * 3
    results = {}
    for shape in [(1, 8, 1), (2, 4, 1)]:
        mesh = jax.make_mesh(shape, sharding.MESH_AXES, axis_types=(AxisType.Auto,) * 3)
        built = programs.build_programs(config, mesh)
        state, steps = built.layout.init(), []
        for batch in batches:
            state, metrics = built.train_step(state, sharding.global_batch(batch, mesh))
            steps.append((float(metrics["loss"]), float(metrics["grad_norm"])))
        results[shape] = np.array(steps)
    one, two = results.values()
    np.testing.assert_allclose(two[:, 0], one[:, 0], rtol=1e-4)  # Losses.
    np.testing.assert_allclose(two[:, 1], one[:, 1], rtol=1e-3)  # Gradient norms.
    assert abs(one[0, 0] - one[-1, 0]) > 1e-3  # The params moved.
