"""What surrounds the PyTorch mirror of the original (tests/fairseq_mirror.py) in a test: the
original's initialisation, its batch layout (`original_batch`: one of our batches in the
fairseq dataloader's ids, path bonds included), its criterion's losses, and checkpoint files
in the released checkpoint's layout (docs/interop.md)."""

import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F
from fairseq_mirror import GaussianLayer
from torch import nn

from moleblend_jax.chem import smiles_to_record
from moleblend_jax.data.batching import pad_batch


@torch.no_grad()
def original_style_init(model: nn.Module, seed: int) -> None:
    """N(0, 0.02) weights as the original's init_params, but nonzero biases and LayerNorm
    affines (as after training) so every weight matters; padding_idx rows stay zero (they never
    train). The Gaussian kernels get a spread (means U(0, 3), stds U(0.1, 1), mul near 1) so psi
    varies with distance."""
    gen = torch.Generator().manual_seed(seed)

    def normal(shape, std, mean=0.0):
        return mean + std * torch.randn(shape, generator=gen)

    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.weight.copy_(normal(module.weight.shape, 0.02))
            if module.bias is not None:
                module.bias.copy_(normal(module.bias.shape, 0.02))
        elif isinstance(module, nn.Embedding):
            module.weight.copy_(normal(module.weight.shape, 0.02))
        elif isinstance(module, nn.LayerNorm):
            module.weight.copy_(normal(module.weight.shape, 0.1, 1.0))
            module.bias.copy_(normal(module.bias.shape, 0.1))
        if isinstance(module, GaussianLayer):
            module.means.weight.copy_(3 * torch.rand(module.means.weight.shape, generator=gen))
            module.stds.weight.copy_(
                0.1 + 0.9 * torch.rand(module.stds.weight.shape, generator=gen)
            )
            module.mul.weight.copy_(normal(module.mul.weight.shape, 0.1, 1.0))
            module.bias.weight.copy_(normal(module.bias.weight.shape, 0.1))
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()
    for name, param in model.named_parameters():
        if name.endswith("lm_output_learned_bias"):
            param.copy_(normal(param.shape, 0.02))


# Aspirin, caffeine, a 14-atom chain (SPD class 10, 5-hop paths), a charged amino acid.
SMILES = (
    "CC(=O)Oc1ccccc1C(=O)O",
    "Cn1cnc2c1c(=O)n(C)c(=O)n2C",
    "CCCCCCCCCCCCCO",
    "NC(CO)C(=O)[O-]",
)
NUM_ATOMS = 16


def sample_molecules() -> tuple[dict, dict]:
    """-> (our batch of SMILES with RDKit conformers shifted by +5 A, forced blend inputs).

    The molecules avoid the documented deviations (docs/interop.md): connected, no atom at
    exactly (0, 0, 0) (the original treats it as padding), no bond stereo beyond E/Z and no
    path over 19 bonds."""
    records = [smiles_to_record(s, i, conformers="rdkit") for i, s in enumerate(SMILES)]
    batch = pad_batch(records, NUM_ATOMS)
    mask = batch["atom_mask"]
    batch["coords"] = np.where(mask[..., None], batch["coords"] + 5.0, 0.0).astype(np.float32)
    rng = np.random.default_rng(0)
    blend = {
        "pair_modality": rng.integers(0, 3, (NUM_ATOMS, NUM_ATOMS)).astype(np.int32),
        "node_blend_3d": (rng.random(mask.shape) < 0.6) & mask,
        "coord_noise": np.where(
            mask[..., None], 0.2 * rng.normal(size=(*mask.shape, 3)), 0.0
        ).astype(np.float32),
    }
    return batch, blend


def original_batch(batch: dict, coords: np.ndarray) -> dict:
    """One of our batches (docs/batch_format.md) + the coordinates the model sees -> the
    original collator's tensors: ids with its offsets, degree from the one-hop pairs, the
    path bonds of our batch, an attention bias with -inf at padded keys."""
    feats = batch["atom_features"].astype(np.int64)
    mask = batch["atom_mask"].astype(bool)
    spd = batch["spd"].astype(np.int64)
    paths = batch["path_edges"].astype(np.int64)
    b, n = mask.shape
    x = np.where(feats > 0, feats + 1 + 512 * np.arange(9), 0)
    degree = np.where(mask, (spd == 2).sum(-1) + 1, 0)
    edge_input = np.where(paths > 0, paths + 2 + 512 * np.arange(3), 0)
    attn_bias = np.zeros((b, n + 1, n + 1), np.float32)
    attn_bias[:, :, 1:][np.broadcast_to(~mask[:, None, :], (b, n + 1, n))] = -np.inf
    pair = mask[:, :, None] & mask[:, None, :]
    z = feats[..., 0]
    type_i = np.where(pair, z[:, :, None] + 2, 1)
    type_j = np.where(pair, z[:, None, :] + 514, 513)
    arrays = dict(
        x=x,
        in_degree=degree,
        out_degree=degree,
        spatial_pos=spd,
        edge_input=edge_input,
        attn_bias=attn_bias,
        pos=np.asarray(coords, np.float32),
        node_type_edge=np.stack([type_i, type_j], -1),
    )
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def criterion_losses(out: dict, data: dict, clean_pos, noise, node_3d) -> dict:
    """The original criterion's four losses (graph_prediction.py) for one forward pass."""
    spd = data["spatial_pos"].clone()
    target = (spd - 1).clamp(min=0)
    target = target.masked_fill((target >= 11) & (target <= 19), 11) - 1
    target = target.masked_fill((target == 509) | (target == -1), -100)
    spd_loss = F.cross_entropy(out["spd_logits"].permute(0, 3, 1, 2), target)

    edges = data["edge_input"]
    raw = (edges - (3 + 512 * torch.arange(3))).clamp(min=-1)
    edge_target = 6 * raw[..., 0] + 2 * raw[..., 1] + raw[..., 2]
    edge_target = edge_target.masked_fill((edges == 0).all(dim=-1), -100)
    edge_loss = F.cross_entropy(out["edge_logits"].permute(0, 4, 1, 2, 3), edge_target)

    clean_pos = torch.as_tensor(clean_pos)
    target_3d = clean_pos[:, None, :, :] - clean_pos[:, :, None, :]
    at_origin = (clean_pos == 0).all(dim=-1)
    skip = (target_3d == 0).all(dim=-1) | at_origin[:, :, None] | at_origin[:, None, :]
    cosine = F.cosine_similarity(
        out["direction"].masked_fill(skip[..., None], 0.0), target_3d, dim=-1
    )
    per_pair = (1 - cosine).masked_fill(skip, 0.0).sum(dim=(1, 2))
    count = (~skip).sum(dim=(1, 2))
    has = count > 0
    direction_loss = (per_pair / count.clamp(min=1)).masked_fill(~has, 0).sum() / has.sum()

    noise = torch.as_tensor(noise)
    node_mask = at_origin | ~torch.as_tensor(node_3d)
    cosine = F.cosine_similarity(out["denoise"], noise, dim=-1)
    denoise_loss = (1 - cosine).masked_fill(node_mask, 0.0).sum() / (~node_mask).sum()
    return dict(
        spd_loss=spd_loss,
        edge_loss=edge_loss,
        direction_loss=direction_loss,
        denoise_loss=denoise_loss,
    )


class AverageMeter:
    """Stands for fairseq's logging meters, pickled in extra_state by reference to a class the
    reader does not have."""

    def __init__(self, value):
        self.value = value


def fairseq_checkpoint(model: nn.Module, args: argparse.Namespace, half: bool) -> dict:
    """A checkpoint dict as fairseq's trainer writes it (cfg a plain container)."""
    state = {k: (v.half() if half else v.clone()) for k, v in model.state_dict().items()}
    return {
        "args": None,
        "cfg": {"model": args, "task": {"noise_scale": 0.2}, "criterion": {}, "common": {}},
        "model": state,
        "criterion": None,
        "optimizer_history": [{"criterion_name": "GraphPredictionLoss", "num_updates": 0}],
        "task_state": {},
        "extra_state": {"epoch": 1, "metrics": {"train": [AverageMeter(1.5)]}},
    }


def round_to_half(model: nn.Module) -> None:
    """Weights -> the float32 values of their fp16 copies (what an fp16 checkpoint stores)."""
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.half().float())


def count_parameters(model: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in model.parameters())
