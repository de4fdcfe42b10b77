"""ModelConfig: config.model as a frozen dataclass with exactly config.model's keys."""

import dataclasses

import jax.numpy as jnp
import model_testing as mt
import pytest

from moleblend_jax.configs import base
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
