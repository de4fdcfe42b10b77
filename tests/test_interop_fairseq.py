"""The original's checkpoint -> our model computes its function (docs/interop.md).

A PyTorch mirror of the original (tests/fairseq_mirror.py) with random original-style weights is
saved as a fairseq checkpoint, imported by experiments/import_checkpoint.py, and both models run
on the same real molecules, coordinates and forced blend masks / node blend / noise. Molecules
avoid the documented deviations: they are connected, have no atom at exactly (0, 0, 0) (the
original treats it as padding; coordinates are shifted by +5 A), no bond stereo beyond E/Z and
no path over 19 bonds. The mirror uses our exact unit vectors (`unit_eps=None`); with the
original's 1e-5 the denoising head differs by about 1e-5 relative (measured in
`test_original_unit_vector_constant`).
"""

import dataclasses
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fairseq_harness as fh  # noqa: E402
import fairseq_mirror as fm  # noqa: E402
import model_testing as mt  # noqa: E402

from moleblend_jax.configs import base  # noqa: E402
from moleblend_jax.errors import UserError  # noqa: E402
from moleblend_jax.finetune.model import FinetuneModel  # noqa: E402
from moleblend_jax.interop import fairseq, fairseq_file, keys  # noqa: E402
from moleblend_jax.model import MoleBlend, MoleBlendEncoder  # noqa: E402
from moleblend_jax.model.embeddings import with_graph_token_bias  # noqa: E402
from moleblend_jax.train.checkpoint import restore_params  # noqa: E402
from moleblend_jax.train.losses import pretraining_losses  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-5
SIZES = {"small": (2, 32, 4, 16), "base": (12, 768, 32, 128)}  # layers, D, heads, K.


@pytest.fixture(scope="module")
def script():
    from moleblend_jax.cli import import_checkpoint

    return import_checkpoint


@pytest.fixture(scope="module")
def molecules():
    return fh.sample_molecules()


def make_checkpoint(tmp_path, size, half, num_tasks=0, seed=0):
    args = fm.make_args(*SIZES[size])
    model = fm.Model(args, num_tasks=num_tasks, unit_eps=None).eval()
    fh.original_style_init(model, seed)
    if half:
        fh.round_to_half(model)
    path = tmp_path / f"{size}.pt"
    torch.save(fh.fairseq_checkpoint(model, args, half), path)
    return model, path


def mirror_outputs(model, batch, blend):
    noisy = batch["coords"] + blend["coord_noise"]
    data = fh.original_batch(batch, noisy)
    with torch.no_grad():
        out = model(
            data,
            pair_modality=torch.from_numpy(blend["pair_modality"]).long(),
            node_3d=torch.from_numpy(blend["node_blend_3d"]),
        )
        clean = np.where(batch["atom_mask"][..., None], batch["coords"], 0.0)
        losses = fh.criterion_losses(out, data, clean, blend["coord_noise"], blend["node_blend_3d"])
    return {k: v.numpy().astype(np.float64) for k, v in {**out, **losses}.items()}


@functools.cache
def jax_forward(model_config):
    """One jitted function per config: MoleBlend outputs, the full attention bias, losses."""

    def forward(params, batch, blend):
        out = MoleBlend(model_config).apply({"params": params}, batch, blend=blend)
        # The bias is built before the layers: an encoder without layers gives it at no cost.
        bias_only = dataclasses.replace(model_config, num_layers=0)
        _, _, atom_bias = MoleBlendEncoder(bias_only).apply(
            {"params": params["encoder"]},
            batch,
            pair_modality=blend["pair_modality"],
            node_blend_3d=blend["node_blend_3d"],
            coords=batch["coords"] + blend["coord_noise"],
        )
        token_bias = params["encoder"]["graph_token"]["attention_bias"]
        _, metrics = pretraining_losses(out, batch, base.get_config().loss_weights)
        return dict(out, attn_bias=with_graph_token_bias(atom_bias, token_bias), **metrics)

    return jax.jit(forward)


def jax_outputs(params, model_config, batch, blend):
    params = jax.tree.map(jnp.asarray, params)
    out = jax_forward(model_config)(params, batch, blend)
    out = {k: np.asarray(v, np.float64) for k, v in out.items()}
    out["edge_logits"] = np.transpose(out["edge_logits"], (0, 1, 4, 2, 3))  # -> [B, N, N, K, C]
    return out


def max_errors(ours, theirs, batch) -> dict[str, float]:
    """Max |ours - original| per output over real atoms / pairs (finite bias entries)."""
    mask = batch["atom_mask"]
    pairs = mask[:, :, None] & mask[:, None, :]
    select = {
        "graph_repr": np.ones(mask.shape[:1], bool),
        "atom_repr": mask,
        "denoise": mask,
        "spd_logits": pairs,
        "edge_logits": pairs,
        "direction": pairs,
    }
    errors = {k: float(np.abs(ours[k] - theirs[k])[m].max()) for k, m in select.items()}
    tokens = np.concatenate([np.ones((len(mask), 1), bool), mask], 1)
    finite = np.isfinite(theirs["attn_bias"])
    assert (finite == tokens[:, None, None, :]).all(), "the original masks exactly padded keys"
    # Rows of padded queries differ (each side fills them its own way) and are never read.
    used = finite & tokens[:, None, :, None]
    errors["attn_bias"] = float(np.abs(ours["attn_bias"] - theirs["attn_bias"])[used].max())
    for loss in ("spd_loss", "edge_loss", "direction_loss", "denoise_loss"):
        errors[loss] = abs(float(ours[loss]) - float(theirs[loss]))
    return errors


@pytest.mark.parametrize("size, half", [("small", False), ("base", True)])
def test_imported_checkpoint_computes_the_originals_function(
    tmp_path, molecules, script, size, half
):
    batch, blend = molecules
    model, path = make_checkpoint(tmp_path, size, half)
    imported = script.run(str(path), str(tmp_path / "import"))
    assert imported.conversion.kind == fairseq.PRETRAINED
    assert len(imported.cast) == (len(model.state_dict()) if half else 0)
    assert set(imported.conversion.dropped) == set(keys.UNUSED_HEAD)
    params = restore_params(tmp_path / "import" / "checkpoints")
    ours = jax_outputs(params, imported.model_config, batch, blend)
    theirs = mirror_outputs(model, batch, blend)
    errors = max_errors(ours, theirs, batch)
    scale = {k: np.abs(theirs[k][np.isfinite(theirs[k])]).max() for k in errors}
    print(
        f"\n{size}: max abs error (max |original|) "
        + ", ".join(f"{k} {v:.1e} ({scale[k]:.1e})" for k, v in errors.items())
    )
    assert max(errors.values()) < TOLERANCE, errors


def test_original_unit_vector_constant(tmp_path, molecules):
    """The original's delta / (d + 1e-5) moves only the denoising output, by ~1e-5 relative."""
    batch, blend = molecules
    model, _ = make_checkpoint(tmp_path, "small", half=False)
    exact = mirror_outputs(model, batch, blend)
    for module in model.modules():
        if isinstance(module, fm.Molecule3DBias):
            module.unit_eps = 1e-5
    original = mirror_outputs(model, batch, blend)
    mask = batch["atom_mask"]
    relative = (
        np.abs(exact["denoise"] - original["denoise"])[mask].max()
        / np.abs(exact["denoise"][mask]).max()
    )
    print(f"\ndenoise relative change with the original's 1e-5: {relative:.1e}")
    assert 0 < relative < 1e-4
    np.testing.assert_array_equal(exact["spd_logits"], original["spd_logits"])


def test_export_import_round_trip_is_bit_identical(tmp_path):
    model, _ = make_checkpoint(tmp_path, "small", half=False)
    state_dict = {k: v.numpy() for k, v in model.state_dict().items()}
    model_config, tables = fairseq_file.model_config_from_cfg(
        {"model": fm.make_args(*SIZES["small"])}
    )
    conversion = fairseq.convert_state_dict(state_dict, model_config, tables)
    exported, _ = fairseq.export_state_dict(conversion.params, model_config, tables)
    assert set(exported) == set(state_dict)
    again = fairseq.params_from_state_dict(exported, model_config, tables)
    flat, flat_again = (jax.tree_util.tree_leaves_with_path(p) for p in (conversion.params, again))
    assert [k for k, _ in flat] == [k for k, _ in flat_again]
    for (name, a), (_, b) in zip(flat, flat_again, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    # Keys that are not row-mapped tables come back exactly as the original stored them.
    for key in state_dict:
        if not key.endswith(("_encoder.weight", "gbf.mul.weight", "gbf.bias.weight")) and (
            key not in keys.UNUSED_HEAD
        ):
            np.testing.assert_array_equal(exported[key], state_dict[key], err_msg=key)


def test_export_of_our_params_runs_in_the_mirror(molecules):
    """Params made here (every row nonzero, as after training), exported, compute the same
    function in the original layout; rows the original cannot index are noted."""
    batch, blend = molecules
    args = fm.make_args(*SIZES["small"])
    model_config, tables = fairseq_file.model_config_from_cfg({"model": args})
    params = mt.random_params(MoleBlend(model_config), batch, blend=blend, scale=0.05)
    state_dict, notes = fairseq.export_state_dict(params, model_config, tables)
    assert any("gbf.mul" in n for n in notes)  # Our atomic-number id 511 has no row there.
    mirror = fm.Model(args, unit_eps=None).eval()
    mirror.load_state_dict({k: torch.tensor(v) for k, v in state_dict.items()}, strict=True)
    ours = jax_outputs(params, model_config, batch, blend)
    errors = max_errors(ours, mirror_outputs(mirror, batch, blend), batch)
    assert max(errors.values()) < TOLERANCE, errors


def test_finetuned_checkpoint_maps_to_the_finetuning_model(tmp_path, molecules):
    batch, _ = molecules
    model, path = make_checkpoint(tmp_path, "small", half=False, num_tasks=3)
    params, model_config = fairseq.load_checkpoint(str(path))
    assert set(params) == {"encoder", "head_hidden", "head_out"}
    finetune_model = FinetuneModel(model_config, num_tasks=3, use_3d=False)
    logits = jax.jit(finetune_model.apply)({"params": params}, batch)
    data = fh.original_batch(batch, batch["coords"])
    with torch.no_grad():
        expected = model(data)["logits"].numpy()
    assert np.abs(np.asarray(logits) - expected).max() < TOLERANCE
    exported = fairseq.state_dict_from_params(params, model_config)
    assert set(exported) == set(model.state_dict()) - set(keys.UNUSED_HEAD)


def test_mismatches_are_reported_together(tmp_path):
    model, _ = make_checkpoint(tmp_path, "small", half=False)
    state_dict = {k: v.numpy() for k, v in model.state_dict().items()}
    model_config, tables = fairseq_file.model_config_from_cfg(
        {"model": fm.make_args(*SIZES["small"])}
    )
    e = keys.ENCODER
    del state_dict[f"{e}layers.1.fc2.bias"]
    state_dict[f"{e}layers.2.fc1.weight"] = np.zeros((32, 32), np.float32)
    state_dict[f"{e}emb_layer_norm.weight"] = np.zeros(33, np.float32)
    with pytest.raises(ValueError) as error:
        fairseq.params_from_state_dict(state_dict, model_config, tables)
    message = str(error.value)
    for text in ("layers.1.fc2.bias", "layers.2.fc1.weight", "emb_layer_norm.weight: (33,)"):
        assert text in message


def test_script_without_torch_says_how_to_install(monkeypatch, script):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(UserError, match=r"pip install -e '\.\[interop\]'$"):
        script.require_torch()


def test_import_mistakes_are_one_line_exit_2(tmp_path):
    """Each mistake: exit 2, one `error:` line naming the path, nothing written."""
    from script_testing import run_experiment

    _, good = make_checkpoint(tmp_path, "small", False)
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:5000])
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    (tmp_path / "nan").mkdir()
    model, _ = make_checkpoint(tmp_path / "nan", "small", False)
    with torch.no_grad():
        dict(model.named_parameters())[f"{keys.ENCODER}layers.0.fc1.weight"][0, 0] = np.nan
    args = fm.make_args(*SIZES["small"])
    torch.save(fh.fairseq_checkpoint(model, args, False), tmp_path / "nan.pt")
    finetune_dir = tmp_path / "ft"
    (finetune_dir / "runs").mkdir(parents=True)
    cases = {
        "truncated.pt": (tmp_path / "truncated.pt", tmp_path / "a"),
        "text.pt": (tmp_path / "text.pt", tmp_path / "b"),
        "missing.pt does not exist": (tmp_path / "missing.pt", tmp_path / "c"),
        "holds NaN or inf": (tmp_path / "nan.pt", tmp_path / "d"),
        "is a fine-tuning workdir": (good, finetune_dir),
    }
    for text, (checkpoint, workdir) in cases.items():
        proc = run_experiment(
            "import_checkpoint.py", f"--checkpoint={checkpoint}", f"--workdir={workdir}"
        )
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (text, proc.stderr[-2000:])
        assert lines[-1].startswith("error: ") and text in lines[-1], (text, lines[-1])
        assert "Traceback" not in proc.stderr and not (workdir / "checkpoints").exists()


def test_model_config_follows_the_cfg():
    args = fm.make_args(3, 48, 6, 24, spd_num_classes=9, act_dropout=0.0)
    model_config, _ = fairseq_file.model_config_from_cfg({"model": args})
    sizes = dataclasses.asdict(model_config)
    assert (sizes["num_layers"], sizes["hidden_dim"], sizes["num_heads"]) == (3, 48, 6)
    assert (sizes["num_kernels"], sizes["num_spd_classes"]) == (24, 9)
    with pytest.raises(ValueError, match="activation_fn"):
        fairseq_file.model_config_from_cfg(
            {"model": fm.make_args(1, 8, 2, 4, activation_fn="relu")}
        )
