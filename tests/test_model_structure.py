"""The model's parameter tree: modality modes (what fine-tuning keeps), parameter count, logical
partitioning and initialisation (SPEC 2-4, 9)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import model_testing as mt
import numpy as np
import pytest

from moleblend_jax.configs import base
from moleblend_jax.finetune.model import FinetuneModel
from moleblend_jax.model import THREE_D_SUBMODULES, TWO_D_SUBMODULES, MoleBlend, MoleBlendEncoder


@pytest.fixture(scope="module")
def batch():
    return mt.make_batch(mt.default_molecules(), num_atoms=6, num_molecules=4)


def _encoder_params(cfg, batch, modality=None):
    model = MoleBlend(cfg) if modality is None else mt.Backbone(cfg, **mt.MODALITIES[modality])
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, batch))["params"]
    return nn.unbox(shapes)


def test_modes_drop_modules_and_share_encoder_names(batch):
    cfg = mt.small_model_config()
    full = _encoder_params(cfg, batch)
    assert set(full) == {"encoder", "spd_head", "edge_head", "direction_head", "denoise_head"}
    p2d = _encoder_params(cfg, batch, "2d")
    p3d = _encoder_params(cfg, batch, "3d")
    assert set(p2d) == set(p3d) == {"encoder"}
    assert not set(THREE_D_SUBMODULES) & set(p2d["encoder"])
    assert not set(TWO_D_SUBMODULES) & set(p3d["encoder"])
    # Fine-tuning loads pretrained params["encoder"] minus the dropped modality's modules.
    for sub in (p2d, p3d):
        same = jax.tree_util.tree_map(
            lambda a, b: a.shape == b.shape,
            sub["encoder"],
            {k: full["encoder"][k] for k in sub["encoder"]},
        )
        assert all(jax.tree_util.tree_leaves(same))

    for modality in mt.MODALITIES.values():
        model = mt.Backbone(cfg, **modality)
        params = mt.random_params(model, batch)
        out = jax.jit(lambda p, b: model.apply({"params": p}, b))(params, batch)  # noqa: B023
        assert set(out) == {"graph_repr", "atom_repr"}
        assert out["graph_repr"].shape == (4, 32) and out["atom_repr"].shape == (4, 6, 32)
        assert bool(jnp.isfinite(out["graph_repr"]).all())


def test_encoder_usable_standalone(batch):
    """A fine-tuning module can wrap MoleBlendEncoder under the name "encoder"."""

    cfg = mt.small_model_config()

    class Finetune(nn.Module):
        config: object

        @nn.compact
        def __call__(self, batch):
            encoder = MoleBlendEncoder(self.config, use_3d=False, name="encoder")
            graph_repr, atom_repr, _ = encoder(batch)
            return nn.Dense(2)(graph_repr)

    shapes = jax.eval_shape(lambda: Finetune(cfg).init({"params": jax.random.key(0)}, batch))
    assert "encoder" in shapes["params"]
    encoder_2d = _encoder_params(cfg, batch, "2d")["encoder"]
    assert set(nn.unbox(shapes)["params"]["encoder"]) == set(encoder_2d)


def test_base_parameter_count():
    cfg = base.get_config().model
    batch = mt.make_batch(mt.default_molecules(), num_atoms=6)
    params = _encoder_params(cfg, batch)

    def count(tree):
        return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))

    backbone = count(params["encoder"])
    head_counts = {k: count(v) for k, v in params.items() if k != "encoder"}
    print(
        f"\nbase backbone params: {backbone:,}; "
        f"heads: {head_counts} = {sum(head_counts.values()):,}"
    )
    assert 46.0e6 < backbone < 48.0e6  # Transformer-M: 47.1M (SPEC 2, 8).
    assert 2.0e6 < sum(head_counts.values()) < 2.6e6


def test_logical_partitioning_rules():
    cfg = mt.small_model_config()
    batch = mt.make_batch(mt.default_molecules(), num_atoms=6)
    boxed = jax.eval_shape(lambda: MoleBlend(cfg).init({"params": jax.random.key(0)}, batch))
    specs = nn.get_partition_spec(boxed)["params"]
    leaves = jax.tree_util.tree_leaves(
        specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
    )
    assert leaves and all(isinstance(s, jax.sharding.PartitionSpec) for s in leaves)
    assert specs["encoder"]["layer_0"]["fc1"]["kernel"] == jax.sharding.PartitionSpec(
        "embed", "mlp"
    )
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "fsdp"))
    shardings = nn.logical_to_mesh_sharding(specs, mesh, base.mesh_config().rules)
    fc1 = shardings["encoder"]["layer_0"]["fc1"]["kernel"]
    assert fc1.spec == jax.sharding.PartitionSpec("fsdp", None)


def test_finetune_head_is_logically_partitioned():
    """The fine-tuning head's params carry logical axes and shard by the same rules."""
    batch = mt.make_batch(mt.default_molecules(), num_atoms=6)
    model = FinetuneModel(config=mt.small_model_config(), num_tasks=3)
    boxed = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, batch))
    specs = nn.get_partition_spec(boxed)["params"]
    P = jax.sharding.PartitionSpec
    assert specs["head_hidden"] == {"kernel": P("embed", "mlp"), "bias": P("mlp")}
    assert specs["head_out"] == {"kernel": P("mlp", "classes"), "bias": P("classes")}
    shapes = nn.unbox(boxed)["params"]
    assert shapes["head_hidden"]["kernel"].shape == (32, 32)
    assert shapes["head_out"]["kernel"].shape == (32, 3)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "fsdp"))
    shardings = nn.logical_to_mesh_sharding(specs, mesh, base.mesh_config().rules)
    assert shardings["head_hidden"]["kernel"].spec == P("fsdp", None)


def test_real_init_follows_spec():
    """SPEC 2: N(0, 0.02) weights, zero biases, zero pad rows, ones LayerNorm scale; the
    fine-tuning head (SPEC 7) likewise."""
    cfg = mt.small_model_config(num_layers=1, hidden_dim=64, ffn_dim=64)
    batch = mt.make_batch(mt.default_molecules(), num_atoms=6)
    model = FinetuneModel(config=cfg, num_tasks=3)  # The 2D encoder plus the head.
    key = jax.random.key(0, impl="rbg")  # cheaper to compile on CPU than threefry
    params = nn.unbox(jax.jit(lambda k: model.init({"params": k}, batch))(key))["params"]
    enc = params["encoder"]
    assert set(enc) == set(_encoder_params(cfg, batch, "2d")["encoder"])
    atom_table = enc["atom_embed"]["embed"]["embedding"]
    np.testing.assert_array_equal(atom_table[:, 0], 0.0)
    assert abs(float(jnp.std(atom_table[:, 1:])) - 0.02) < 1e-3
    np.testing.assert_array_equal(enc["spd_bias"]["embed"]["embedding"][0, 0], 0.0)
    for dense in (enc["layer_0"]["fc1"], params["head_hidden"]):
        assert abs(float(jnp.std(dense["kernel"])) - 0.02) < 2e-3
        np.testing.assert_array_equal(dense["bias"], 0.0)
    np.testing.assert_array_equal(enc["layer_0"]["ffn_norm"]["scale"], 1.0)
