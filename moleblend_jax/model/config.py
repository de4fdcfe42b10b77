"""ModelConfig: config.model as a frozen dataclass, the one way model modules get their settings.

The top-level modules (`MoleBlend`, `MoleBlendEncoder`, `FinetuneModel`) accept config.model
(an `ml_collections.ConfigDict`) or a `ModelConfig` and convert it once, on construction
(`ModelConfig.coerce`); every module below them reads the fields it needs by name. The values
and their comments live in `moleblend_jax/configs/base.py` (`model_config()`); here are only
the names and types, and `from_config` rejects a config.model with any other set of keys.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from moleblend_jax.schema import RETIRED_MODEL_KEYS

# Stochastic depth draws one keep/drop per token position ("token", the original's) or per
# molecule (encoder_layer.DropPath).
STOCHASTIC_DEPTH_MASKS = ("token", "molecule")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The fields of config.model (configs/base.py), immutable and hashable."""

    # Encoder (SPEC 2).
    num_layers: int
    hidden_dim: int
    ffn_dim: int
    num_heads: int
    layer_norm_eps: float
    init_std: float
    embedding_dropout: float
    residual_dropout: float
    attention_dropout: float
    activation_dropout: float
    stochastic_depth: float
    stochastic_depth_mask: str
    dtype: str
    remat: bool
    # Input vocabularies (SPEC 1); the feature counts are the record schema's (schema.py).
    atom_vocab_size: int
    bond_vocab_size: int
    num_spd_ids: int
    num_degree_ids: int
    max_path_hops: int
    # 3D encodings (SPEC 3).
    num_kernels: int
    gaussian_std_floor: float
    centrality_scale: float
    # Blend and noise (SPEC 4).
    blend_probs: tuple[float, float, float]
    blend_per_molecule: bool
    node_blend_probs: tuple[float, float]
    coord_noise_std: float
    # Heads (SPEC 5).
    pair_head_dim: int
    head_layer_norm_eps: float
    num_spd_classes: int
    num_edge_classes: int
    direction_hidden_dim: int
    tied_denoise_head: bool
    denoise_attention_dropout: float

    def __post_init__(self):
        if self.stochastic_depth_mask not in STOCHASTIC_DEPTH_MASKS:
            raise ValueError(
                f"config.model.stochastic_depth_mask must be one of {STOCHASTIC_DEPTH_MASKS}, "
                f"not {self.stochastic_depth_mask!r}."
            )
        # Only the 3D share is read: a pair that does not sum to 1 would be silently ignored.
        p_degree, p_3d = self.node_blend_probs
        if min(p_degree, p_3d) < 0 or abs(p_degree + p_3d - 1) > 1e-6:
            raise ValueError(
                f"config.model.node_blend_probs={self.node_blend_probs}: two probabilities "
                "(degree, 3D centrality) summing to 1."
            )

    @property
    def jnp_dtype(self) -> jnp.dtype:
        """The activation / matmul operand dtype (params stay float32)."""
        return jnp.dtype(self.dtype)

    @property
    def node_blend_p_3d(self) -> float:
        """Probability that an atom takes the 3D centrality term (SPEC 4)."""
        return self.node_blend_probs[1]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ModelConfig":
        """config.model (a ConfigDict or mapping) -> ModelConfig; raises naming unknown and
        missing keys."""
        values = dict(config.items())
        for key, fact in RETIRED_MODEL_KEYS.items():
            if key in values and values.pop(key) != fact:
                raise ValueError(
                    f"config.model.{key} must be {fact} (a saved config's key, now the record "
                    "schema's fact: moleblend_jax/schema.py)."
                )
        names = {field.name for field in dataclasses.fields(cls)}
        unknown, missing = sorted(set(values) - names), sorted(names - set(values))
        if unknown or missing:
            raise ValueError(
                f"config.model does not match ModelConfig (moleblend_jax/model/config.py): "
                f"unknown keys {unknown}, missing keys {missing}."
            )
        # Sequences arrive as lists from some overrides; tuples keep the config hashable.
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    @classmethod
    def coerce(cls, config: "ModelConfig | Mapping[str, Any]") -> "ModelConfig":
        """A ModelConfig as is; config.model (a ConfigDict) converted by `from_config`."""
        return config if isinstance(config, cls) else cls.from_config(config)
