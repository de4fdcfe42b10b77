"""ModelConfig: config.model as a frozen dataclass with exactly config.model's keys."""

import dataclasses

import jax.numpy as jnp
import model_testing as mt
import pytest

from moleblend_jax.configs import base, finetune
from moleblend_jax.finetune.model import FinetuneModel
from moleblend_jax.model import ModelConfig, MoleBlend, MoleBlendEncoder


def test_from_config_keeps_every_value():
    config = base.get_config("tiny").model
    model_config = ModelConfig.from_config(config)
    assert dataclasses.asdict(model_config) == config.to_dict()
    assert model_config.jnp_dtype == jnp.float32
    assert model_config.node_blend_p_3d == config.node_blend_probs[1]
    hash(model_config)  # Frozen and hashable (tuples, no lists).
    assert ModelConfig.coerce(model_config) is model_config
    assert ModelConfig.coerce(config) == model_config


def test_from_config_names_unknown_and_missing_keys():
    config = mt.small_model_config()
    config.num_experts = 4
    del config["centrality_scale"]
    with pytest.raises(
        ValueError,
        match=r"unknown keys \['num_experts'\], missing keys "
        r"\['centrality_scale'\]",
    ):
        ModelConfig.from_config(config)
    with pytest.raises(ValueError, match=r"unknown keys \[\], missing keys \['num_kernels'\]"):
        ModelConfig.from_config(
            {k: v for k, v in base.model_config().items() if k != "num_kernels"}
        )


def test_top_level_modules_convert_a_config_dict_once():
    config = mt.small_model_config()
    want = ModelConfig.from_config(config)
    for module in (
        MoleBlend(config=config),
        MoleBlendEncoder(config, use_2d=True, use_3d=False),
        FinetuneModel(config=config, num_tasks=2),
    ):
        assert module.config == want
        assert module.clone().config == want  # Flax clones modules; the config stays converted.


@pytest.mark.parametrize("variant", base.VARIANTS)
def test_every_variant_has_the_same_keys_and_a_valid_model(variant):
    """Variants change values, never keys: pretraining and fine-tuning configs of each variant
    have the keys of the default's, and its model section converts."""

    def keys(tree, prefix=""):
        return {
            k
            for key, value in tree.items()
            for k in (keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key})
        }

    for module in (base, finetune):
        config = module.get_config(variant).to_dict()
        assert keys(config) == keys(module.get_config().to_dict())
        ModelConfig.from_config(module.get_config(variant).model)


def test_retired_feature_counts_load_at_their_value_and_are_refused_otherwise():
    saved = {**base.model_config().to_dict(), "num_atom_features": 9, "num_bond_features": 3}
    assert ModelConfig.from_config(saved) == ModelConfig.from_config(base.model_config())
    with pytest.raises(ValueError, match=r"config.model.num_bond_features must be 3"):
        ModelConfig.from_config({**saved, "num_bond_features": 4})


def test_node_blend_probs_must_sum_to_one():
    config = base.model_config()
    config.node_blend_probs = (0.5, 0.6)  # [0] is never read: a typo here would be lost.
    with pytest.raises(ValueError, match=r"node_blend_probs=\(0.5, 0.6\): two probabilities"):
        ModelConfig.from_config(config)
    config.node_blend_probs = (1.0, 0.0)  # The 2D-only ablation.
    assert ModelConfig.from_config(config).node_blend_p_3d == 0.0
