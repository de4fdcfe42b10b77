"""Pretrained encoders by name, and the one loader of every init spec (`loader.load`).

  from moleblend_jax import pretrained
  init = pretrained.load("pretrained:small-moses")   # or a .pt file, an orbax directory
  init.params["encoder"], init.model_config

The registry (registry.json), the weights files (`weights.py`'s .npz) and their model cards are
package data in this folder; `package.package_checkpoint` (`moleblend package-encoder`) makes a
weights file from a pretraining workdir.
"""

from moleblend_jax.pretrained.loader import (
    PREFIX,
    InitWeights,
    check,
    describe,
    load,
    registered_name,
    require_matching_config,
)

__all__ = [
    "PREFIX",
    "InitWeights",
    "check",
    "describe",
    "load",
    "registered_name",
    "require_matching_config",
]
