"""Compact PyTorch reference of the MoleBLEND pretraining model (SPEC.md sections 2-5).

Inputs are padded batches (see data.py): atom [B,N,9] raw OGB ids, spd [B,N,N] hop counts
(510 = unreachable), path [B,N,N,5,3] raw bond ids of the first 5 bonds of a shortest path (-1 = none),
pos [B,N,3] clean coordinates (Angstrom), mask [B,N] bool. The per-step randomness (blend mask, node
blend, coordinate noise) is drawn by sample_randomness() outside the model, so a compiled forward
sees only tensors.
"""

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

OFFSET = 512  # per-feature offset in the shared atom / bond tables (SPEC 1)
UNREACHABLE = 510  # SPD of disconnected pairs (SPEC 1)


@dataclass(frozen=True)
class Config:
    layers: int = 12
    hidden: int = 768
    ffn: int = 768
    heads: int = 32
    kernels: int = 128  # K Gaussian kernels
    hops: int = 5  # multi-hop edge path length
    pair_dim: int = 32  # r_i, c_j in R^32 -> 1024 pair feature
    factored_heads: bool = False  # same maths as the outer product, without the [B,N,N,1024] tensor
    attn_dropout: float = 0.1
    act_dropout: float = 0.1
    droppath: float = 0.1  # max stochastic depth, linspace(0, .1) over layers
    blend_p: tuple = (0.2, 0.2, 0.6)  # SPD, edge, 3D per ordered pair
    node_blend_p: tuple = (0.4, 0.6)  # degree (2D), centrality (3D) per atom
    noise: float = 0.2  # Angstrom
    loss_w: tuple = (0.1, 0.1, 0.5, 6.0)  # spd, edge, 3d, denoise


CONFIGS = {
    "tiny": Config(layers=4, hidden=128, ffn=128, heads=8, kernels=32),
    "base": Config(),
}
CONFIGS.update({k + "_fh": replace(v, factored_heads=True) for k, v in list(CONFIGS.items())})


def safe_cos(a, b, eps=1e-8):
    """Cosine similarity along the last axis with finite gradients at zero vectors (SPEC 9)."""
    den = ((a * a).sum(-1).clamp(min=eps) * (b * b).sum(-1).clamp(min=eps)).sqrt()
    return (a * b).sum(-1) / den


def drop_path(x, p, training):
    """Stochastic depth: drop the whole residual branch per sample."""
    if not training or p == 0.0:
        return x
    keep = (torch.rand(x.shape[0], 1, 1, device=x.device) >= p).to(x.dtype)
    return x * keep / (1.0 - p)


class Relations(nn.Module):
    """SPD, multi-hop edge and Gaussian 3D biases [B,H,N,N] plus 3D centrality [B,N,D] (SPEC 3)."""

    def __init__(self, c):
        super().__init__()
        H, K = c.heads, c.kernels
        self.hops = c.hops
        self.spd = nn.Embedding(OFFSET, H, padding_idx=0)  # id = hops + 1; 0 = pad
        self.edge = nn.Embedding(3 * OFFSET + 1, H, padding_idx=0)  # 3 bond features, offset 512
        self.hop_w = nn.Parameter(torch.empty(c.hops, H, H))  # one HxH matrix per hop
        self.mu = nn.Parameter(torch.empty(K))
        self.sigma = nn.Parameter(torch.empty(K))
        self.gamma = nn.Embedding(OFFSET, 1, padding_idx=0)  # per atom type; shared by i and j
        self.beta = nn.Embedding(OFFSET, 1, padding_idx=0)
        self.k_fc1 = nn.Linear(K, K)
        self.k_fc2 = nn.Linear(K, H)
        self.centrality = nn.Linear(K, c.hidden)
        self.register_buffer("bond_off", torch.arange(3) * OFFSET + 1, persistent=False)

    def forward(self, spd, path, types, pos, pair):
        # SPD bias.
        b_spd = self.spd(torch.where(pair, spd.clamp(max=UNREACHABLE) + 1, 0))  # [B,N,N,H]
        # Multi-hop edge bias: (1/n) sum_k mean3(emb(e_k)) W_k, n = clamp(SPD, 1, hops).
        x = self.edge(torch.where(path >= 0, path + self.bond_off, 0)).mean(-2)  # [B,N,N,5,H]
        n = torch.where(pair, spd.clamp(1, self.hops), 1).to(x.dtype)
        b_edge = torch.einsum("bijkh,khg->bijg", x, self.hop_w) / n[..., None]
        # Gaussian basis on distances from the (noisy) coordinates, in fp32.
        delta = pos[:, None, :, :] - pos[:, :, None, :]  # r_j - r_i
        d2 = (delta * delta).sum(-1)
        nz = d2 > 0
        dist = torch.where(nz, torch.where(nz, d2, 1.0).sqrt(), 0.0)  # safe norm
        unit = delta / (dist[..., None] + 1e-5)
        g, b = self.gamma(types)[..., 0], self.beta(types)[..., 0]  # [B,N]
        xg = (g[:, :, None] + g[:, None, :]) * dist + (b[:, :, None] + b[:, None, :])
        s = self.sigma.abs() + 0.01
        psi = torch.exp(-0.5 * ((xg[..., None] - self.mu) / s) ** 2) / (math.sqrt(2 * math.pi) * s)
        psi = psi * pair[..., None]  # padded pairs -> 0
        b_3d = self.k_fc2(F.gelu(self.k_fc1(psi)))
        cent = self.centrality(psi.sum(2))  # [B,N,D]
        to_bhnn = lambda t: t.permute(0, 3, 1, 2)
        return to_bhnn(b_spd), to_bhnn(b_edge), to_bhnn(b_3d), cent, unit


class Layer(nn.Module):
    """Post-LN Transformer layer: x = LN(x + Attn(x)); x = LN(x + FFN(x)) (SPEC 2)."""

    def __init__(self, c, droppath):
        super().__init__()
        D = c.hidden
        self.c, self.dp = c, droppath
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(D, c.ffn), nn.Linear(c.ffn, D)
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)

    def attn(self, x, bias):
        B, T, D = x.shape
        H = self.c.heads
        split = lambda t: t.view(B, T, H, D // H).transpose(1, 2)
        q = split(self.q(x)) * (D // H) ** -0.5
        a = torch.softmax((q @ split(self.k(x)).transpose(-1, -2) + bias).float(), -1).to(x.dtype)
        a = F.dropout(a, self.c.attn_dropout, self.training)
        return self.o((a @ split(self.v(x))).transpose(1, 2).reshape(B, T, D))

    def forward(self, x, bias):
        x = self.ln1(x + drop_path(self.attn(x, bias), self.dp, self.training))
        h = self.fc2(F.dropout(F.gelu(self.fc1(x)), self.c.act_dropout, self.training))
        return self.ln2(x + drop_path(h, self.dp, self.training))


class PairHead(nn.Module):
    """r_i = LN(GELU(W_r h_i)), c_j = LN(GELU(W_c h_j)), z_ij = vec(r_i outer c_j) -> Linear (SPEC 5)."""

    def __init__(self, c, out):
        super().__init__()
        P = c.pair_dim
        self.factored = c.factored_heads
        self.r, self.c = nn.Linear(c.hidden, P), nn.Linear(c.hidden, P)
        self.ln_r, self.ln_c = nn.LayerNorm(P, eps=1e-12), nn.LayerNorm(P, eps=1e-12)
        self.out = nn.Linear(P * P, out)

    def forward(self, h):
        r = self.ln_r(F.gelu(self.r(h)))
        c = self.ln_c(F.gelu(self.c(h)))
        if self.factored:  # W . vec(r_i outer c_j) = r_i^T W_o c_j, contracted one side at a time
            P = r.shape[-1]
            t = torch.einsum("bip,opq->bioq", r, self.out.weight.view(-1, P, P))
            return torch.einsum("bioq,bjq->bijo", t, c) + self.out.bias
        z = (r[:, :, None, :, None] * c[:, None, :, None, :]).flatten(-2)  # [B,N,N,1024]
        return self.out(z)


class DenoiseHead(nn.Module):
    """Equivariant atom head: out_i[a] = Linear_a(sum_j alpha_ij u_ij[a] v_j) (SPEC 5)."""

    def __init__(self, c):
        super().__init__()
        D = c.hidden
        self.c = c
        self.q, self.k, self.v = (nn.Linear(D, D) for _ in range(3))
        self.axis = nn.ModuleList(nn.Linear(D, 1) for _ in range(3))

    def forward(self, h, bias, unit):
        B, N, D = h.shape
        H = self.c.heads
        split = lambda t: t.view(B, N, H, D // H).transpose(1, 2)
        q = split(self.q(h)) * (D // H) ** -0.5
        a = torch.softmax((q @ split(self.k(h)).transpose(-1, -2) + bias).float(), -1).to(h.dtype)
        a = F.dropout(a, self.c.attn_dropout, self.training)  # [B,H,N,N]
        ra = a[:, :, None] * unit.permute(0, 3, 1, 2)[:, None]  # [B,H,3,N,N]
        o = (ra @ split(self.v(h))[:, :, None]).permute(0, 3, 2, 1, 4).reshape(B, N, 3, D)
        return torch.cat([lin(o[:, :, i]) for i, lin in enumerate(self.axis)], -1)  # [B,N,3]


class MoleBlend(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, H = c.hidden, c.heads
        self.c = c
        self.atom = nn.Embedding(
            9 * OFFSET + 1, D, padding_idx=0
        )  # sum of the 9 feature embeddings
        self.degree = nn.Embedding(OFFSET, D, padding_idx=0)
        self.graph_token = nn.Parameter(torch.empty(D))
        self.token_bias = nn.Parameter(torch.empty(H))  # per-head scalar for row/col 0
        self.rel = Relations(c)
        self.emb_ln = nn.LayerNorm(D)
        self.layers = nn.ModuleList(
            Layer(c, p) for p in torch.linspace(0, c.droppath, c.layers).tolist()
        )
        self.head_spd = PairHead(c, 11)
        self.head_edge = PairHead(c, c.hops * 24)
        self.head_3d = PairHead(c, 256)
        self.head_3d_xyz = nn.Linear(256, 3)  # == three Linear(256 -> 1), one per axis
        self.head_noise = DenoiseHead(c)
        self.register_buffer("atom_off", torch.arange(9) * OFFSET + 1, persistent=False)
        self.reset_parameters()

    def reset_parameters(self):
        """Every Linear/Embedding weight and the free parameters N(0, 0.02); biases, pad rows 0 (SPEC 2)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.padding_idx is not None:
                    with torch.no_grad():
                        m.weight[m.padding_idx].zero_()
        for p in (self.graph_token, self.token_bias, self.rel.hop_w, self.rel.mu, self.rel.sigma):
            nn.init.normal_(p, 0.0, 0.02)

    def forward(self, batch, rnd):
        """Returns (total loss, dict of the four losses)."""
        c = self.c
        mask, spd = batch["mask"], batch["spd"]
        B, N = mask.shape
        pair = mask[:, :, None] & mask[:, None, :]
        pos_noisy = batch["pos"] + rnd["noise"]

        ids = torch.where(mask[..., None], batch["atom"] + self.atom_off, 0)
        b_spd, b_edge, b_3d, cent, unit = self.rel(spd, batch["path"], ids[..., 0], pos_noisy, pair)

        # Node-level blend: degree embedding (2D) or 0.01 * 3D centrality (3D).
        deg = ((spd == 1) & pair).sum(-1)
        deg_emb = self.degree(torch.where(mask, deg.clamp(max=OFFSET - 2) + 1, 0))
        x = self.atom(ids).sum(-2) + torch.where(rnd["node3d"][..., None], 0.01 * cent, deg_emb)
        x = torch.cat([self.graph_token.expand(B, 1, -1), x], 1)
        x = self.emb_ln(x)

        # Blended relation: each ordered pair keeps exactly one modality's bias (SPEC 4).
        M = rnd["blend"]
        rel = torch.where(M == 0, b_spd, torch.where(M == 1, b_edge, b_3d))  # [B,H,N,N]
        tok = torch.zeros(N + 1, N + 1, device=x.device)
        tok[0, :] = 1.0
        tok[1:, 0] = 1.0
        bias = F.pad(rel, (1, 0, 1, 0)) + self.token_bias.view(1, -1, 1, 1) * tok
        keep = F.pad(mask, (1, 0), value=True)
        bias = bias.masked_fill(~keep[:, None, None, :], float("-inf"))  # one bias, all layers

        for layer in self.layers:
            x = layer(x, bias)
        h = x[:, 1:]

        out_spd = self.head_spd(h)  # [B,N,N,11]
        out_edge = self.head_edge(h).view(B, N, N, c.hops, 24)
        out_3d = self.head_3d_xyz(self.head_3d(h))  # [B,N,N,3]
        out_noise = self.head_noise(h, bias[:, :, 1:, 1:], unit)  # [B,N,3]
        parts = self.losses(batch, rnd, pair, out_spd, out_edge, out_3d, out_noise)
        total = sum(
            w * parts[k] for w, k in zip(c.loss_w, ("spd", "edge", "3d", "denoise"), strict=False)
        )
        return total, parts

    def losses(self, batch, rnd, pair, out_spd, out_edge, out_3d, out_noise):
        c = self.c
        spd, path, pos, mask = batch["spd"], batch["path"], batch["pos"], batch["mask"]
        N = spd.shape[1]
        offdiag = pair & ~torch.eye(N, dtype=torch.bool, device=spd.device)
        valid = offdiag & (spd >= 1) & (spd < UNREACHABLE)  # self, pad, unreachable ignored

        def masked_ce(logits, target, m):
            ce = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), reduction="none"
            )
            m = m.reshape(-1).to(ce.dtype)
            return (ce * m).sum() / m.sum().clamp(min=1.0)

        # SPD: 1..10 hops -> 0..9, 11+ -> 10.
        l_spd = masked_ce(out_spd, spd.clamp(1, 11) - 1, valid)
        # Edge: joint class 6*type + 2*stereo + conj of the k-th path bond, k < min(SPD, hops).
        bt, st, cj = path.unbind(-1)
        hop_ok = (
            valid[..., None]
            & (torch.arange(c.hops, device=spd.device) < spd[..., None])
            & (bt >= 0)
            & (bt < 4)
            & (st >= 0)
            & (st < 3)
            & (cj >= 0)
            & (cj < 2)
        )
        l_edge = masked_ce(out_edge, torch.where(hop_ok, 6 * bt + 2 * st + cj, 0), hop_ok)
        # 3D: 1 - cos(pred, r_j - r_i) with clean coordinates; mean per molecule, then over molecules.
        target = pos[:, None, :, :] - pos[:, :, None, :]
        m3 = offdiag.to(pos.dtype)
        per_mol = ((1 - safe_cos(out_3d.float(), target)) * m3).sum((1, 2)) / m3.sum((1, 2)).clamp(
            min=1
        )
        has = (m3.sum((1, 2)) > 0).to(pos.dtype)
        l_3d = (per_mol * has).sum() / has.sum().clamp(min=1)
        # Denoise: 1 - cos(pred_i, noise_i) on atoms whose node blend chose 3D.
        md = (mask & rnd["node3d"]).to(pos.dtype)
        l_den = ((1 - safe_cos(out_noise.float(), rnd["noise"])) * md).sum() / md.sum().clamp(min=1)
        return {"spd": l_spd, "edge": l_edge, "3d": l_3d, "denoise": l_den}


def sample_randomness(c, mask, generator=None):
    """Per-step draws: one [N,N] blend mask shared by the batch, node blend, coordinate noise."""
    B, N = mask.shape
    blend = torch.multinomial(
        torch.tensor(c.blend_p), N * N, replacement=True, generator=generator
    ).view(N, N)
    node3d = torch.rand(B, N, generator=generator) < c.node_blend_p[1]
    noise = torch.randn(B, N, 3, generator=generator) * c.noise * mask[..., None]
    return {"blend": blend, "node3d": node3d, "noise": noise}
