"""Reading a fairseq checkpoint file: tensors as float32 numpy, sizes from its `cfg`.

torch is needed only to unpickle (the `interop` extra). The file is read with
`weights_only=True`; objects of classes that are not installed here (fairseq's meters in
`extra_state`, say) become inert stand-ins, and `cfg`'s argparse Namespaces are read as they are.
"""

import argparse
import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from moleblend_jax.configs import base
from moleblend_jax.interop.tables import FairseqTables
from moleblend_jax.model.config import ModelConfig

INSTALL_HINT = "pip install -e '.[interop]'"


class TorchMissingError(ImportError):
    """torch is not installed; the message says how to install it."""


def import_torch():
    try:
        import torch
    except ImportError as error:
        raise TorchMissingError(
            f"Reading a fairseq checkpoint needs torch: {INSTALL_HINT}"
        ) from error
    return torch


class _StandIn:
    """Accepts whatever an unpickled object of an absent class is built with, and keeps it."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def _stand_in(qualified_name: str):
    module, _, name = qualified_name.rpartition(".")
    return type(name, (_StandIn,), {"__module__": module}), qualified_name


def read_checkpoint(path: str) -> tuple[dict[str, np.ndarray], Any, list[str]]:
    """-> (state dict as float32 numpy, the checkpoint's cfg, names of the keys cast to float32)."""
    torch = import_torch()
    extra = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    allowed = [argparse.Namespace if g == "argparse.Namespace" else _stand_in(g) for g in extra]
    with torch.serialization.safe_globals(allowed):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, Mapping) or "model" not in checkpoint:
        raise ValueError(f"{path}: not a fairseq checkpoint (no 'model' state dict).")
    state_dict, cast = {}, []
    for key, tensor in checkpoint["model"].items():
        if tensor.dtype != torch.float32:
            cast.append(f"{key} ({str(tensor.dtype).removeprefix('torch.')})")
        state_dict[key] = tensor.detach().to(torch.float32).numpy()
    return state_dict, checkpoint.get("cfg"), cast


def _section(cfg: Any, name: str) -> Mapping:
    section = cfg.get(name) if isinstance(cfg, Mapping) else getattr(cfg, name, None)
    if isinstance(section, argparse.Namespace):
        return vars(section)
    return section if isinstance(section, Mapping) else {}


def cfg_arg(cfg: Any, name: str, default: Any = None) -> Any:
    """An argument of the original: cfg.model first (legacy models keep every argument there),
    then cfg.task."""
    for section in ("model", "task"):
        values = _section(cfg, section)
        if name in values and values[name] is not None:
            return values[name]
    if default is None:
        raise ValueError(f"The checkpoint's cfg has no '{name}' (cfg.model or cfg.task).")
    return default


def _require(cfg: Any, name: str, wanted: Any, default: Any) -> None:
    value = cfg_arg(cfg, name, default)
    if value != wanted:
        raise ValueError(
            f"The checkpoint's cfg has {name}={value!r}; only {wanted!r} is supported."
        )


def model_config_from_cfg(cfg: Any) -> tuple[ModelConfig, FairseqTables]:
    """The original's arguments -> (our ModelConfig, float32 activations; its table sizes).

    Sizes: encoder_layers, encoder_embed_dim, encoder_ffn_embed_dim, encoder_attention_heads,
    num_3d_bias_kernel, multi_hop_max_dist, and the heads' spd_num_classes,
    edge_type_{1,2,3}_num_classes, edge_max_dist, blend_pred_3d_hidden_dim. Defaults are the
    original's (moleblend_base architecture and task defaults).
    """
    _require(cfg, "activation_fn", "gelu", "gelu")
    _require(cfg, "encoder_normalize_before", True, True)
    _require(cfg, "sandwich_ln", False, False)
    _require(cfg, "edge_type", "multi_hop", "multi_hop")
    hops = int(cfg_arg(cfg, "multi_hop_max_dist", 5))
    if int(cfg_arg(cfg, "edge_max_dist", 5)) != hops:
        raise ValueError("edge_max_dist != multi_hop_max_dist: one max_path_hops here.")
    m = base.model_config()
    m.num_layers = int(cfg_arg(cfg, "encoder_layers"))
    m.hidden_dim = int(cfg_arg(cfg, "encoder_embed_dim"))
    m.ffn_dim = int(cfg_arg(cfg, "encoder_ffn_embed_dim"))
    m.num_heads = int(cfg_arg(cfg, "encoder_attention_heads"))
    m.num_kernels = int(cfg_arg(cfg, "num_3d_bias_kernel", 128))
    m.max_path_hops = hops
    m.num_spd_classes = int(cfg_arg(cfg, "spd_num_classes", 11))
    m.num_edge_classes = int(
        np.prod(
            [cfg_arg(cfg, f"edge_type_{i}_num_classes", n) for i, n in ((1, 4), (2, 3), (3, 2))]
        )
    )
    m.direction_hidden_dim = int(cfg_arg(cfg, "blend_pred_3d_hidden_dim", 256))
    m.attention_dropout = float(cfg_arg(cfg, "attention_dropout", 0.1))
    m.activation_dropout = float(cfg_arg(cfg, "act_dropout", 0.0))
    m.stochastic_depth = float(cfg_arg(cfg, "droppath_prob", 0.0))
    m.coord_noise_std = float(cfg_arg(cfg, "noise_scale", 0.2))
    m.dtype = "float32"
    tables = FairseqTables(
        **{
            f.name: int(cfg_arg(cfg, f.name, getattr(FairseqTables(), f.name)))
            for f in dataclasses.fields(FairseqTables)
        }
    )
    return ModelConfig.from_config(m), tables
