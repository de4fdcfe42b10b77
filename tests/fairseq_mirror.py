"""A PyTorch mirror of the original MoleBLEND model and criterion (YudiZh/MoleBlend @ b180f1a).

Written from reading MoleBlend/modules/*.py, models/moleblend.py and criterions/
graph_prediction.py: the same module tree, parameter names and shapes (so `state_dict()` has the
original's keys), and the same function in eval mode. Not the original's code. Differences that
only a test needs:
- no dropout / DropPath modules (they hold no parameters; eval mode disables them);
- the blend masks, node blend and noise are arguments instead of random draws, and the heads run
  in eval mode too (the original computes them only when training);
- `unit_eps`: the original divides by (distance + 1e-5) for the denoising head's unit vectors;
  None gives this repository's exact unit vectors (docs/spec.md SPEC 5).
The fairseq dataloader, initialisation, criterion and checkpoint files: tests/fairseq_harness.py.
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn

GAUSSIAN_PI = 3.14159  # The original's constant in its Gaussian normaliser.


def _linear(fan_in, fan_out, bias=True):
    return nn.Linear(fan_in, fan_out, bias=bias)


class AtomFeature(nn.Module):
    def __init__(self, num_atoms, num_degree, dim):
        super().__init__()
        self.atom_encoder = nn.Embedding(num_atoms + 1, dim, padding_idx=0)
        self.in_degree_encoder = nn.Embedding(num_degree, dim, padding_idx=0)
        self.out_degree_encoder = nn.Embedding(num_degree, dim, padding_idx=0)
        self.graph_token = nn.Embedding(1, dim)

    def forward(self, data):
        """-> ([B, N, D] atom features summed, [B, N, D] degree term)."""
        nodes = self.atom_encoder(data["x"]).sum(dim=-2)
        degree = self.in_degree_encoder(data["in_degree"]) + self.out_degree_encoder(
            data["out_degree"]
        )
        return nodes, degree


class MoleculeAttnBias(nn.Module):
    def __init__(self, heads, num_edges, num_spatial, num_edge_dis, max_hops):
        super().__init__()
        self.heads, self.max_hops = heads, max_hops
        self.edge_encoder = nn.Embedding(num_edges + 1, heads, padding_idx=0)
        self.edge_dis_encoder = nn.Embedding(num_edge_dis * heads * heads, 1)
        self.spatial_pos_encoder = nn.Embedding(num_spatial, heads, padding_idx=0)
        self.graph_token_virtual_distance = nn.Embedding(1, heads)

    def forward(self, data):
        """-> ([B, H, T, T] graph-token bias + collator mask, [B, H, N, N] SPD, edge biases)."""
        h = self.heads
        base = data["attn_bias"]  # [B, T, T]: 0, or -inf at padded keys.
        bias = base[:, None].repeat(1, h, 1, 1)
        t = self.graph_token_virtual_distance.weight.view(1, h, 1)
        bias[:, :, 1:, 0] = bias[:, :, 1:, 0] + t
        bias[:, :, 0, :] = bias[:, :, 0, :] + t
        bias = bias + base[:, None]  # The original adds the collator's bias a second time.

        spd = data["spatial_pos"]
        spd_bias = self.spatial_pos_encoder(spd).permute(0, 3, 1, 2)
        hops = torch.where(spd > 1, spd - 1, torch.ones_like(spd)).clamp(0, self.max_hops)
        edges = data["edge_input"][:, :, :, : self.max_hops]  # [B, N, N, K, 3]
        bonds = self.edge_encoder(edges).mean(dim=-2)  # [B, N, N, K, H]
        k = bonds.shape[-2]
        hop_matrices = self.edge_dis_encoder.weight.reshape(-1, h, h)[:k]
        per_hop = torch.einsum("bijkh,khg->bijkg", bonds, hop_matrices)
        edge_bias = (per_hop.sum(dim=-2) / hops.float()[..., None]).permute(0, 3, 1, 2)
        return bias, spd_bias, edge_bias


class GaussianLayer(nn.Module):
    def __init__(self, kernels, num_edges):
        super().__init__()
        self.means = nn.Embedding(1, kernels)
        self.stds = nn.Embedding(1, kernels)
        self.mul = nn.Embedding(num_edges, 1, padding_idx=0)
        self.bias = nn.Embedding(num_edges, 1, padding_idx=0)

    def forward(self, distance, pair_types):
        """[B, N, N], [B, N, N, 2] rows -> [B, N, N, K] psi."""
        x = self.mul(pair_types).sum(-2) * distance[..., None] + self.bias(pair_types).sum(-2)
        mean = self.means.weight.view(-1)
        std = self.stds.weight.view(-1).abs() + 1e-2
        normaliser = (2 * GAUSSIAN_PI) ** 0.5 * std
        return torch.exp(-0.5 * ((x - mean) / std) ** 2) / normaliser


class NonLinear(nn.Module):
    def __init__(self, fan_in, fan_out):
        super().__init__()
        self.layer1 = _linear(fan_in, fan_in)
        self.layer2 = _linear(fan_in, fan_out)

    def forward(self, x):
        return self.layer2(F.gelu(self.layer1(x)))


class Molecule3DBias(nn.Module):
    def __init__(self, heads, num_edges, dim, kernels, unit_eps):
        super().__init__()
        self.unit_eps = unit_eps
        self.gbf = GaussianLayer(kernels, num_edges)
        self.gbf_proj = NonLinear(kernels, heads)
        self.edge_proj = _linear(kernels, dim)

    def forward(self, data):
        """-> ([B, H, N, N] bias, -inf at padded keys; [B, N, D] centrality; [B, N, N, 3] unit
        vectors r_i -> r_j)."""
        pad = data["x"].eq(0).all(dim=-1)
        pos = data["pos"]
        delta = pos[:, None, :, :] - pos[:, :, None, :]
        distance = delta.norm(dim=-1)
        if self.unit_eps is None:
            safe = torch.where(distance > 0, distance, torch.ones_like(distance))
            unit = torch.where(distance[..., None] > 0, delta / safe[..., None], 0.0)
        else:
            unit = delta / (distance[..., None] + self.unit_eps)
        psi = self.gbf(distance, data["node_type_edge"])
        bias = self.gbf_proj(psi).permute(0, 3, 1, 2)
        bias = bias.masked_fill(pad[:, None, None, :], float("-inf"))
        psi = psi.masked_fill(pad[:, None, :, None], 0.0)
        return bias, self.edge_proj(psi.sum(dim=-2)), unit


class MultiheadAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = _linear(dim, dim), _linear(dim, dim)
        self.v_proj, self.out_proj = _linear(dim, dim), _linear(dim, dim)

    def forward(self, x, bias, key_pad):
        b, t, d = x.shape
        hd = d // self.heads

        def split(y):
            return y.view(b, t, self.heads, hd).transpose(1, 2)

        q = split(self.q_proj(x) * hd**-0.5)
        logits = q @ split(self.k_proj(x)).transpose(-1, -2) + bias
        logits = logits.masked_fill(key_pad[:, None, None, :], float("-inf"))
        context = torch.softmax(logits.float(), dim=-1) @ split(self.v_proj(x))
        return self.out_proj(context.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    def __init__(self, dim, ffn, heads):
        super().__init__()
        self.self_attn = MultiheadAttention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = _linear(dim, ffn), _linear(ffn, dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, x, bias, key_pad):  # Post-LN.
        x = self.self_attn_layer_norm(x + self.self_attn(x, bias, key_pad))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class AtomTaskHead(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = (_linear(dim, dim) for _ in range(3))
        self.force_proj1, self.force_proj2, self.force_proj3 = (_linear(dim, 1) for _ in range(3))

    def forward(self, h, bias, unit):
        """[B, N, D] atoms, [B, H, N, N] atom-block bias, [B, N, N, 3] -> [B, N, 3]."""
        b, n, d = h.shape
        hd = d // self.heads

        def split(y):
            return y.view(b, n, self.heads, hd).transpose(1, 2)

        q = split(self.q_proj(h)) * hd**-0.5
        probs = torch.softmax(q @ split(self.k_proj(h)).transpose(-1, -2) + bias, dim=-1)
        v = split(self.v_proj(h))  # [B, H, N, hd]
        x = torch.einsum("bhij,bija,bhjd->biahd", probs, unit, v).reshape(b, n, 3, d)
        projections = (self.force_proj1, self.force_proj2, self.force_proj3)
        return torch.cat([p(x[:, :, a]) for a, p in enumerate(projections)], dim=-1)


class TransformN2Head(nn.Module):
    def __init__(self, dim, hidden=32):
        super().__init__()
        self.column_head, self.row_head = _linear(dim, hidden), _linear(dim, hidden)
        self.column_LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.row_LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, h):
        """[B, N, D] -> [B, N, N, P*P], index c1 * P + c2 (row c1, column c2)."""
        row = self.row_LayerNorm(F.gelu(self.row_head(h)))
        col = self.column_LayerNorm(F.gelu(self.column_head(h)))
        outer = row[:, :, None, :, None] * col[:, None, :, None, :]
        return outer.flatten(start_dim=3)


class PredictSPDHead(nn.Module):
    def __init__(self, dim, classes):
        super().__init__()
        self.transform_n2_head = TransformN2Head(dim)
        self.linear = _linear(32 * 32, classes)

    def forward(self, h):
        return self.linear(self.transform_n2_head(h))


class PredictEdgeHead(nn.Module):
    def __init__(self, dim, hops, classes):
        super().__init__()
        self.hops = hops
        self.transform_n2_head = TransformN2Head(dim)
        self.linear_map_feature = _linear(32 * 32, hops * classes)

    def forward(self, h):
        out = self.linear_map_feature(self.transform_n2_head(h))
        return out.view(*out.shape[:3], self.hops, -1)


class Predict3DHead(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.transform_n2_head = TransformN2Head(dim)
        self.linear = _linear(32 * 32, hidden)
        self.force_proj1, self.force_proj2, self.force_proj3 = (
            _linear(hidden, 1) for _ in range(3)
        )

    def forward(self, h):
        hidden = self.linear(self.transform_n2_head(h))
        return torch.cat(
            [p(hidden) for p in (self.force_proj1, self.force_proj2, self.force_proj3)], dim=-1
        )


class MoleBlendEncoder(nn.Module):
    """`pretraining`: the blended pretraining encoder with 3D bias and heads; else the 2D
    fine-tuning encoder (the original's MoleBlendEncoderMolnet without 3D)."""

    def __init__(self, args, pretraining=True, unit_eps=1e-5):
        super().__init__()
        d, h = args.encoder_embed_dim, args.encoder_attention_heads
        self.pretraining, self.heads = pretraining, h
        self.atom_feature = AtomFeature(args.num_atoms, args.num_in_degree, d)
        self.molecule_attn_bias = MoleculeAttnBias(
            h, args.num_edges, args.num_spatial, args.num_edge_dis, args.multi_hop_max_dist
        )
        self.emb_layer_norm = nn.LayerNorm(d)
        self.layers = nn.ModuleList(
            EncoderLayer(d, args.encoder_ffn_embed_dim, h) for _ in range(args.encoder_layers)
        )
        if pretraining:
            self.molecule_3d_bias = Molecule3DBias(
                h, args.num_edges, d, args.num_3d_bias_kernel, unit_eps
            )
            self.atom_proc = AtomTaskHead(d, h)
            self.blend_spd_pred_head = PredictSPDHead(d, args.spd_num_classes)
            self.blend_edge_pred_head = PredictEdgeHead(d, args.edge_max_dist, 24)
            self.blend_3d_pred_head = Predict3DHead(d, args.blend_pred_3d_hidden_dim)

    def forward(self, data, pair_modality=None, node_3d=None):
        """pair_modality [N, N] long (0 SPD, 1 edge, 2 3D), node_3d [B, N] bool (pretraining)."""
        pad = data["x"][:, :, 0].eq(0)
        b = pad.shape[0]
        key_pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool), pad], dim=1)
        nodes, degree = self.atom_feature(data)
        bias, spd_bias, edge_bias = self.molecule_attn_bias(data)
        out = {}
        if self.pretraining:
            bias_3d, centrality, unit = self.molecule_3d_bias(data)
            picks = [(pair_modality == m)[None, None] for m in range(3)]
            blended = sum(
                torch.where(p, x, 0.0)
                for p, x in zip(picks, (spd_bias, edge_bias, bias_3d), strict=True)
            )
            node_term = torch.where(node_3d[..., None], 0.01 * centrality, degree)
        else:
            blended, node_term = spd_bias + edge_bias, degree
        bias = bias.clone()
        bias[:, :, 1:, 1:] = bias[:, :, 1:, 1:] + blended
        token = self.atom_feature.graph_token.weight[None].expand(b, 1, -1)
        x = self.emb_layer_norm(torch.cat([token, nodes + node_term], dim=1))
        for layer in self.layers:
            x = layer(x, bias, key_pad)
        out.update(graph_repr=x[:, 0], atom_repr=x[:, 1:], attn_bias=bias)
        if self.pretraining:
            atoms = x[:, 1:]
            out["denoise"] = self.atom_proc(atoms, bias[:, :, 1:, 1:], unit)
            out["spd_logits"] = self.blend_spd_pred_head(atoms)
            out["edge_logits"] = self.blend_edge_pred_head(atoms)
            out["direction"] = self.blend_3d_pred_head(atoms)
        return out


class ClassificationHead(nn.Module):
    def __init__(self, dim, tasks):
        super().__init__()
        self.dense, self.out_proj = _linear(dim, dim), _linear(dim, tasks)

    def forward(self, x):
        return self.out_proj(F.gelu(self.dense(x)))


class FairseqEncoder(nn.Module):
    """The original's `MoleBlend` / `MoleBlendMolnet` encoder: `molecule_encoder` plus the
    HOMO-LUMO head (pretraining; never in the loss) or `proj_out` (fine-tuned)."""

    def __init__(self, args, num_tasks=0, unit_eps=1e-5):
        super().__init__()
        d = args.encoder_embed_dim
        self.molecule_encoder = MoleBlendEncoder(args, not num_tasks, unit_eps)
        self.lm_head_transform_weight = _linear(d, d)
        self.layer_norm = nn.LayerNorm(d)
        if num_tasks:
            self.proj_out = ClassificationHead(d, num_tasks)
        else:
            self.lm_output_learned_bias = nn.Parameter(torch.zeros(1))
            self.embed_out = _linear(d, 1, bias=False)

    def forward(self, data, **blend):
        out = self.molecule_encoder(data, **blend)
        if hasattr(self, "proj_out"):
            out["logits"] = self.proj_out(out["graph_repr"])
        return out


class Model(nn.Module):
    """FairseqEncoderModel: the encoder under `encoder`, as the checkpoint keys have it."""

    def __init__(self, args, num_tasks=0, unit_eps=1e-5):
        super().__init__()
        self.encoder = FairseqEncoder(args, num_tasks, unit_eps)

    def forward(self, data, **blend):
        return self.encoder(data, **blend)


def make_args(layers, dim, heads, kernels, **overrides) -> argparse.Namespace:
    """The original's arguments that fix the model (moleblend_base architecture defaults)."""
    args = dict(
        encoder_layers=layers,
        encoder_embed_dim=dim,
        encoder_ffn_embed_dim=dim,
        encoder_attention_heads=heads,
        num_3d_bias_kernel=kernels,
        activation_fn="gelu",
        encoder_normalize_before=True,
        sandwich_ln=False,
        edge_type="multi_hop",
        multi_hop_max_dist=5,
        edge_max_dist=5,
        spd_num_classes=11,
        edge_type_1_num_classes=4,
        edge_type_2_num_classes=3,
        edge_type_3_num_classes=2,
        blend_pred_3d_hidden_dim=256,
        num_atoms=512 * 9,
        num_edges=512 * 3,
        num_in_degree=512,
        num_out_degree=512,
        num_spatial=512,
        num_edge_dis=128,
        arch="moleblend_base",
        blending=True,
        add_3d=True,
    )
    args.update(overrides)
    return argparse.Namespace(**args)
