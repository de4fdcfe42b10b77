"""Fine-tuning: masked losses, loading a pretrained checkpoint without its 3D modules, a run
whose validation metric improves, results.json."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_testing import small_config

from moleblend_jax import model as model_lib
from moleblend_jax.configs import finetune as finetune_configs
from moleblend_jax.errors import UserError
from moleblend_jax.finetune import loop as finetune_loop
from moleblend_jax.finetune import losses as finetune_losses
from moleblend_jax.finetune import protocol, task_data
from moleblend_jax.finetune.model import FinetuneModel, load_pretrained_encoder
from moleblend_jax.train import checkpoint, loop, telemetry
from moleblend_jax.train.finite import NonFiniteError
from moleblend_jax.train.state import TrainState


def _load_finetune_config(**overrides):
    config = finetune_configs.get_config("tiny")
    m = config.model
    m.num_layers, m.hidden_dim, m.ffn_dim, m.num_heads, m.num_kernels = 2, 32, 32, 4, 16
    for key, value in overrides.items():
        config[key] = value
    return config


def test_masked_bce_ignores_missing_labels():
    logits = jnp.array([[2.0, -1.0], [0.5, 30.0]])
    labels = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    mask = jnp.array([[True, True], [True, False]])  # The huge wrong logit is unlabelled.
    expected = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0)), np.log1p(np.exp(0.5))])
    np.testing.assert_allclose(
        finetune_losses.masked_bce_loss(logits, labels, mask), expected, rtol=1e-6
    )


def test_masked_mse_ignores_missing_labels():
    preds = jnp.array([[1.0, 5.0], [2.0, 0.0]])
    targets = jnp.array([[0.0, 0.0], [0.0, 0.0]])
    mask = jnp.array([[True, False], [True, False]])
    np.testing.assert_allclose(
        finetune_losses.masked_mse_loss(preds, targets, mask), 2.5, rtol=1e-6
    )


def test_standardizer_round_trip_and_label_mask():
    train = np.array([[1.0, np.nan], [3.0, 4.0], [5.0, 8.0]], np.float32)
    std = finetune_losses.Standardizer.from_train_labels(train, "standardised")
    np.testing.assert_allclose(std.mean, [3.0, 6.0])
    batch = {"labels": np.array([[5.0, 0.0]], np.float32), "label_mask": np.array([[True, False]])}
    encoded = std.encode(batch)["labels"]
    np.testing.assert_allclose(encoded, [[(5 - 3) / np.std([1, 3, 5]), 0.0]], rtol=1e-6)
    np.testing.assert_allclose(std.decode(encoded)[0, 0], 5.0, rtol=1e-6)


class _FixedOutputs(nn.Module):
    """A stand-in model whose outputs are the batch's "outputs"."""

    @nn.compact
    def __call__(self, batch, train=False):
        return batch["outputs"] + 0.0 * self.param("unused", nn.initializers.zeros, ())


def test_label_units_loss_is_the_originals():
    """The original: MSE(output * sigma + mu, raw label), one scalar mu/sigma over the train
    labels; "standardised": per-task, on (label - mu_t) / sigma_t, smaller by sigma_t^2."""
    train = np.array([[1.0, np.nan], [3.0, 4.0], [5.0, 8.0]], np.float32)
    batch = {
        "outputs": np.array([[0.5, -1.0], [2.0, 0.3]], np.float32),
        "labels": np.array([[5.0, np.nan], [2.0, 7.0]], np.float32),
        "label_mask": np.array([[True, False], [True, True]]),
    }
    mu, sigma = np.mean([1, 3, 5, 4, 8]), np.std([1, 3, 5, 4, 8])
    labelled = batch["label_mask"]
    want = np.mean((batch["outputs"] * sigma + mu - batch["labels"])[labelled] ** 2)

    def loss(standardizer):
        loss_fn = finetune_losses.finetune_loss_fn(_FixedOutputs(), False, standardizer)
        return float(loss_fn({"unused": 0.0}, standardizer.encode(batch), {})[0])

    label_units = finetune_losses.Standardizer.from_train_labels(train, "label_units")
    np.testing.assert_allclose(label_units.mean, [mu, mu], rtol=1e-6)
    np.testing.assert_allclose(loss(label_units), want, rtol=1e-5)

    per_task = finetune_losses.Standardizer.from_train_labels(train[:, :1], "standardised")
    task_sigma = np.std([1, 3, 5])
    one_task = {k: v[:, :1] for k, v in batch.items()}
    want_one = np.mean((one_task["outputs"] * task_sigma + 3.0 - one_task["labels"]) ** 2)
    loss_fn = finetune_losses.finetune_loss_fn(_FixedOutputs(), False, per_task)
    got = float(loss_fn({"unused": 0.0}, per_task.encode(one_task), {})[0])
    np.testing.assert_allclose(got, want_one / task_sigma**2, rtol=1e-5)
    with pytest.raises(ValueError, match="regression_loss"):
        finetune_losses.Standardizer.from_train_labels(train, "mse")


def test_pretrained_checkpoint_loads_without_3d_modules(tmp_path):
    pretrain_config = small_config()
    pretrain_model = model_lib.MoleBlend(config=pretrain_config.model)
    example = loop.dummy_batch(1, 8)
    pretrained = pretrain_model.init({"params": jax.random.PRNGKey(1)}, example)["params"]
    from flax import linen as nn

    pretrained = nn.unbox(pretrained)
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=pretrained, opt_state={}, rng=jax.random.PRNGKey(0)
    )
    ckpt = checkpoint.Checkpointer(tmp_path / "ckpt", save_every=1, keep=1)
    ckpt.save(5, state, force=True)
    ckpt.close()

    restored = checkpoint.restore_params(tmp_path / "ckpt")
    config = _load_finetune_config()
    model = FinetuneModel(config=config.model, num_tasks=3)
    params = nn.unbox(model.init({"params": jax.random.PRNGKey(2)}, example)["params"])
    loaded, dropped = load_pretrained_encoder(params, restored)
    assert dropped == sorted(model_lib.THREE_D_SUBMODULES)
    for name in model_lib.TWO_D_SUBMODULES + ("atom_embed",):
        jax.tree.map(
            np.testing.assert_array_equal, loaded["encoder"][name], pretrained["encoder"][name]
        )
    # The task head keeps its fresh initialisation.
    jax.tree.map(np.testing.assert_array_equal, loaded["head_out"], params["head_out"])

    bigger = _load_finetune_config()
    bigger.model.hidden_dim = 48
    big_params = nn.unbox(
        FinetuneModel(config=bigger.model, num_tasks=3).init(
            {"params": jax.random.PRNGKey(2)}, example
        )["params"]
    )
    with pytest.raises(UserError, match=r"encoder holds another model: \d+ params of other shapes"):
        load_pretrained_encoder(big_params, restored)


def test_short_finetuning_run_improves_validation(tmp_path):
    config = _load_finetune_config(
        dataset="esol", max_molecules=240, epochs=12, warmup_epochs=1, patience=12, num_seeds=1
    )
    config.batch_size = 32
    config.optimizer.peak_lr = 1e-3
    config.data.buckets = (32,)
    config.data.max_atoms = 32
    results = protocol.run(config, tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == results["seeds"][0]["epochs_run"]
    first_valid = lines[0]["valid"]
    assert results["valid_mean"] < 0.95 * first_valid, (first_valid, results["valid_mean"])
    best = results["seeds"][0]
    assert lines[best["best_epoch"] - 1]["valid"] == best["valid"]
    assert lines[best["best_epoch"] - 1]["test"] == best["test"]
    # Every epoch's line has the epoch's throughput (train/telemetry.py).
    assert all(np.isfinite(line[key]) for line in lines for key in telemetry.TIMING_KEYS)
    assert results["metric"] == "rmse" and results["init"] == "scratch"
    # One task: its per-task RMSE is the headline number.
    assert best["test_per_task"] == {results["tasks"][0]: best["test"]}
    assert results["test_per_task_mean"] == {results["tasks"][0]: results["test_mean"]}
    assert (tmp_path / "split_scaffold_seed0.json").exists()


def _quick_config(**overrides):
    """One epoch on 60 ESOL molecules: seconds."""
    quick = dict(dataset="esol", max_molecules=60, epochs=1, warmup_epochs=0, num_seeds=1)
    config = _load_finetune_config(**{**quick, **overrides})
    config.batch_size = 32
    config.data.buckets = (32,)  # The shapes of the run above: compiled executables are shared.
    config.data.max_atoms = 32
    config.data.num_prep_workers = 1
    return config


def test_each_seed_logs_to_its_own_tensorboard_run(tmp_path):
    results = protocol.run(_quick_config(num_seeds=2), tmp_path)
    runs = sorted(p.name for p in (tmp_path / "tensorboard").iterdir())
    assert runs == ["seed_0", "seed_1"]
    assert all(any((tmp_path / "tensorboard" / run).iterdir()) for run in runs)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["seed"] for line in lines] == [0, 1] == [s["seed"] for s in results["seeds"]]
    assert (tmp_path / "split_scaffold_seed1.json").exists()


def test_split_file_is_read_never_written(tmp_path):
    config = _quick_config(split="random", seed=5)
    data = task_data.load(config, tmp_path / "made")
    task_data.seed_split(data, "random", 0, workdir=tmp_path / "made")
    given = tmp_path / "made" / "split_random_seed0.json"
    text = given.read_text()
    stamp = given.stat().st_mtime
    run_dir = tmp_path / "given"
    config.split_file = str(given)
    results = protocol.run(config, run_dir)
    assert results["seeds"][0]["seed"] == 5 and results["num_molecules"] == len(data.records)
    assert given.read_text() == text and given.stat().st_mtime == stamp
    assert not list(run_dir.glob("split_*.json"))
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        protocol.run(_quick_config(split_file=str(tmp_path / "missing.json")), tmp_path / "x")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"train": [0, 1], "valid": [2], "test": [3]}))
    with pytest.raises(ValueError, match="wrong.json .esol.: split ids do not match"):
        protocol.run(_quick_config(split_file=str(wrong)), tmp_path / "y")


def test_non_finite_loss_stops_the_run(tmp_path, monkeypatch):
    real = finetune_loop.finetune_loss_fn

    def poisoned(*args):
        loss_fn = real(*args)

        def nan_loss(params, batch, rngs):
            loss = loss_fn(params, batch, rngs)[0] * jnp.nan
            return loss, {"loss": loss}

        return nan_loss

    monkeypatch.setattr(finetune_loop, "finetune_loss_fn", poisoned)
    with pytest.raises(NonFiniteError, match="seed 0 epoch 1 step 1: loss=nan"):
        protocol.run(_quick_config(), tmp_path)


def test_checkpoint_with_another_layer_count_is_refused():
    def encoder(num_layers, *modules):
        names = ("atom_embed", *modules, *(f"layer_{i}" for i in range(num_layers)))
        return {name: {"kernel": np.zeros((2, 2), np.float32)} for name in names}

    three_d = model_lib.THREE_D_SUBMODULES
    pretrained = {"encoder": encoder(4, *three_d, *model_lib.TWO_D_SUBMODULES)}
    fewer = {"encoder": encoder(2, *model_lib.TWO_D_SUBMODULES), "head_out": {}}
    with pytest.raises(UserError, match=r"only in the checkpoint \['layer_2', 'layer_3'\]"):
        load_pretrained_encoder(fewer, pretrained)
    more = {"encoder": encoder(6, *model_lib.TWO_D_SUBMODULES)}
    with pytest.raises(UserError, match=r"missing from the checkpoint \['layer_4', 'layer_5'\]"):
        load_pretrained_encoder(more, pretrained)
    same = {"encoder": encoder(4, *three_d)}  # QM9: the 2D modules are dropped on purpose.
    assert load_pretrained_encoder(same, pretrained)[1] == sorted(model_lib.TWO_D_SUBMODULES)
