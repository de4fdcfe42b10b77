"""Pretrained encoders by name: the weights file, packaging a pretraining checkpoint, the one
loader of init specs (names, orbax directories, the original's .pt) and its one-line errors,
fine-tuning from `pretrained:NAME` and `Embedder.from_pretrained`."""

import dataclasses
import json
import logging
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from train_testing import REPO, random_params, small_config

from moleblend_jax import atomic, pretrained
from moleblend_jax import model as model_lib
from moleblend_jax.errors import MissingFileError, UserError
from moleblend_jax.inference import Embedder
from moleblend_jax.pretrained import package, registry, weights
from moleblend_jax.train import checkpoint

NAME = "test-enc"


def _pretraining_workdir(root, params, config, step=7):
    """What a pretraining run leaves: checkpoints/<step>, model_config.json, config.json and a
    metrics.jsonl with held-out lines."""
    ckpt = checkpoint.Checkpointer(root / "checkpoints", save_every=1, keep=1)
    ckpt.save(step, {"params": params}, force=True)
    ckpt.close()
    sizes = dataclasses.asdict(model_lib.ModelConfig.coerce(config.model))
    (root / "model_config.json").write_text(json.dumps(sizes))
    (root / "config.json").write_text(json.dumps({"batch_size": 16}))
    lines = [
        {"step": 4, "loss": 3.0, "eval_loss": 2.5},
        {"step": 7, "loss": 2.0, "eval_loss": 2.25, "eval_spd_accuracy": 0.5},
        {"step": 8, "loss": 1.9},
    ]
    (root / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


@pytest.fixture(scope="module")
def pretraining(tmp_path_factory):
    """(pretraining workdir, its params, its config) of a 2-layer, width-32 model."""
    config = small_config()
    params = random_params(config)
    root = _pretraining_workdir(tmp_path_factory.mktemp("pre"), params, config)
    return root, params, config


@pytest.fixture
def test_registry(tmp_path, monkeypatch):
    """The registry moved to tmp_path with one entry, NAME, not yet packaged."""
    entry = {
        "config": "configs/finetune.py:tiny",
        "weights": f"{NAME}.npz",
        "sha256": None,
        "card": f"{NAME}.md",
        "summary": "a test encoder",
    }
    (tmp_path / registry.REGISTRY_FILE).write_text(json.dumps({NAME: entry}))
    monkeypatch.setattr(registry, "directory", lambda: tmp_path)
    return tmp_path


def _flat(tree):
    return weights.flatten(tree)


def test_weights_file_round_trip_bf16_and_float32(tmp_path, pretraining):
    _, params, _ = pretraining
    encoder = {"encoder": params["encoder"]}
    weights.write(tmp_path / "a.npz", encoder, {"model": {"num_layers": 2}}, "bfloat16")
    weights.write(tmp_path / "b.npz", encoder, {"model": {"num_layers": 2}}, "bfloat16")
    weights.write(tmp_path / "f.npz", encoder, {}, "float32")
    # The same params give the same bytes (no timestamps): the sha256 is reproducible.
    assert atomic.file_sha256(tmp_path / "a.npz") == atomic.file_sha256(tmp_path / "b.npz")
    loaded, meta = weights.read(tmp_path / "a.npz")
    assert meta["dtype"] == "bfloat16" and meta["model"] == {"num_layers": 2}
    original = _flat(encoder)
    assert meta["num_params"] == sum(v.size for v in original.values())
    got = _flat(loaded)
    assert list(got) == list(original)
    for name, value in original.items():
        want = value.astype(ml_dtypes.bfloat16).astype(np.float32)
        assert got[name].dtype == np.float32
        np.testing.assert_array_equal(got[name], want, err_msg=name)
        # bf16 keeps 8 bits of mantissa: within 2^-8 relative of the float32 value.
        np.testing.assert_allclose(got[name], value, rtol=2**-8, err_msg=name)
    exact, _ = weights.read(tmp_path / "f.npz")
    for name, value in original.items():
        np.testing.assert_array_equal(_flat(exact)[name], value, err_msg=name)
    # bf16 stores half the float32 bytes (compression aside).
    assert (tmp_path / "a.npz").stat().st_size < 0.6 * (tmp_path / "f.npz").stat().st_size


def test_package_writes_the_file_and_sets_the_registry_sha(test_registry, pretraining):
    root, params, config = pretraining
    done = package.package_checkpoint(root / "checkpoints", NAME)
    assert done.path == test_registry / f"{NAME}.npz" and done.step == 7
    assert done.sha256 == atomic.file_sha256(done.path)
    assert done.size_bytes == done.path.stat().st_size
    assert done.held_out == {"eval_loss": 2.25, "eval_spd_accuracy": 0.5}
    assert registry.entries()[NAME].sha256 == done.sha256
    init = pretrained.load(f"pretrained:{NAME}")
    assert init.kind == "registry" and set(init.params) == {"encoder"}  # Heads not shipped.
    assert init.pretrain == {"pretrain_steps": 7, "pretrain_batch": 16}
    sizes = dataclasses.asdict(model_lib.ModelConfig.coerce(config.model))
    assert init.model_config == json.loads(json.dumps(sizes))  # Tuples as JSON lists.
    want = weights.rounded({"encoder": params["encoder"]}, "bfloat16")
    for name, value in _flat(want).items():
        np.testing.assert_array_equal(_flat(init.params)[name], value, err_msg=name)
    assert done.num_params == sum(v.size for v in _flat(want).values())
    # The bare name loads the same (Embedder.from_pretrained's spelling).
    assert pretrained.load(NAME).description == init.description


def test_loader_errors_are_one_line(test_registry, pretraining, tmp_path):
    root, _, _ = pretraining
    with pytest.raises(UserError, match=f"no such pretrained encoder; known names: {NAME}$"):
        pretrained.load("pretrained:nope")
    with pytest.raises(UserError, match="neither a file nor a pretrained encoder; known names"):
        pretrained.load("nope")
    with pytest.raises(UserError, match="is not shipped in this install yet"):
        pretrained.load(f"pretrained:{NAME}")
    package.package_checkpoint(root, NAME)  # The workdir itself is accepted too.
    path = test_registry / f"{NAME}.npz"
    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(UserError) as error:
        pretrained.load(f"pretrained:{NAME}")
    assert "the file is damaged or not the released one" in str(error.value)
    assert "\n" not in str(error.value)
    path.write_bytes(good)
    registry.set_sha256(NAME, None, test_registry / registry.REGISTRY_FILE)
    with pytest.raises(UserError, match="has no sha256"):
        pretrained.load(f"pretrained:{NAME}")
    with pytest.raises(MissingFileError, match="does not exist"):
        pretrained.load(str(tmp_path / "missing" / "checkpoints"))
    with pytest.raises(UserError, match="not a registered encoder; known: test-enc"):
        package.package_checkpoint(root, "other")


def test_a_model_config_that_does_not_fit_is_named(test_registry, pretraining):
    root, _, config = pretraining
    package.package_checkpoint(root, NAME)
    init = pretrained.load(f"pretrained:{NAME}")
    pretrained.require_matching_config(init, config.model)  # The same sizes: no error.
    other = config.model.copy_and_resolve_references()
    other.num_layers, other.hidden_dim = 3, 64
    with pytest.raises(UserError) as error:
        pretrained.require_matching_config(init, other)
    message = str(error.value)
    assert "num_layers 3 (weights 2)" in message and "hidden_dim 64 (weights 32)" in message
    assert "use --config=configs/finetune.py:tiny" in message


def test_finetuning_from_a_registered_name(test_registry, pretraining, tmp_path, caplog):
    """lr 0: the fine-tuned encoder is the packaged one, bit for bit (bf16-rounded)."""
    from test_finetune_protocol import _quick_config

    from moleblend_jax.finetune import protocol

    root, params, _ = pretraining
    package.package_checkpoint(root, NAME)
    config = _quick_config(init_checkpoint=f"pretrained:{NAME}")
    config.optimizer.peak_lr = 0.0
    with caplog.at_level(logging.INFO):
        results = protocol.run(config, tmp_path / "ft")
    assert results["init"] == "pretrained" and results["init_checkpoint"] == f"pretrained:{NAME}"
    assert results["pretrain"] == {"pretrain_steps": 7, "pretrain_batch": 16}
    assert any(f"Fine-tuning from pretrained:{NAME}" in r.getMessage() for r in caplog.records)
    tuned = checkpoint.restore_params(tmp_path / "ft" / "checkpoints" / "seed_0")
    want = _flat(weights.rounded({"encoder": params["encoder"]}, "bfloat16"))
    got = _flat({"encoder": tuned["encoder"]})
    assert set(got) < set(want)  # The 3D modules are dropped for ESOL.
    for name in got:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        protocol.run(_quick_config(), tmp_path / "scratch")
    assert any("Fine-tuning from random init" in r.getMessage() for r in caplog.records)


def test_finetuning_refuses_an_unknown_name_before_any_data(test_registry, tmp_path):
    from test_finetune_protocol import _quick_config

    from moleblend_jax.finetune import protocol

    with pytest.raises(UserError, match="known names: test-enc"):
        protocol.run(_quick_config(init_checkpoint="pretrained:nope"), tmp_path)
    assert not (tmp_path / "data").exists()


def test_embedder_from_pretrained_matches_the_checkpoint(test_registry, pretraining):
    root, _, _ = pretraining
    package.package_checkpoint(root, NAME, dtype="float32")
    smiles = ["CCO", "c1ccccc1O", "CC(=O)N"]
    by_name = Embedder.from_pretrained(NAME).embed(smiles)
    by_spec = Embedder.from_pretrained(f"pretrained:{NAME}").embed(smiles)
    by_dir = Embedder.from_pretrained(str(root)).embed(smiles)
    by_checkpoint = Embedder.from_checkpoint(root).embed(smiles)
    # `moleblend embed --checkpoint=pretrained:NAME` goes through from_checkpoint: a name, not
    # a path below the working directory.
    by_command = Embedder.from_checkpoint(f"pretrained:{NAME}").embed(smiles)
    assert by_name.shape == (3, 32) and np.isfinite(by_name).all()
    np.testing.assert_array_equal(by_name, by_checkpoint)
    np.testing.assert_array_equal(by_command, by_checkpoint)
    np.testing.assert_array_equal(by_spec, by_checkpoint)
    np.testing.assert_array_equal(by_dir, by_checkpoint)
    other = small_config(**{"model.num_layers": 3}).model
    with pytest.raises(UserError, match="does not fit model_config: num_layers 3 \\(weights 2\\)"):
        Embedder.from_pretrained(NAME, model_config=other)


def test_the_originals_pt_loads_through_the_same_loader(tmp_path):
    pytest.importorskip("torch")
    from test_interop_fairseq import make_checkpoint

    from moleblend_jax.interop import fairseq

    _, path = make_checkpoint(tmp_path, "small", half=False)
    init = pretrained.load(str(path))
    assert init.kind == "fairseq" and init.model_config["num_layers"] == 2
    want = fairseq.import_checkpoint(str(path)).conversion.params
    for name, value in _flat(want).items():
        np.testing.assert_array_equal(_flat(init.params)[name], value, err_msg=name)
    embeddings = Embedder.from_pretrained(str(path)).embed(["CCO"])
    assert embeddings.shape == (1, 32) and np.isfinite(embeddings).all()


def test_package_command_prints_sha_size_and_held_out(pretraining, tmp_path):
    root, _, _ = pretraining
    shipped = registry.entries()["small-moses"].sha256
    run = subprocess.run(
        [sys.executable, "-m", "moleblend_jax.cli", "package-encoder", f"--checkpoint={root}",
         "--name=small-moses", f"--out_dir={tmp_path}"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    digest = atomic.file_sha256(tmp_path / "small-moses.npz")
    assert f"sha256 {digest}" in run.stdout
    assert "eval_loss 2.2500, eval_spd_accuracy 0.5000" in run.stdout
    saved = json.loads((tmp_path / registry.REGISTRY_FILE).read_text())
    assert saved["small-moses"]["sha256"] == digest
    # The package's own registry is left alone with --out_dir.
    assert registry.entries()["small-moses"].sha256 == shipped
