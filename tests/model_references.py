"""Direct numpy evaluations of the SPEC formulas (float64): the references of the model and
loss tests (`np_encoder` runs a whole encoder from a params dict and a batch of
model_testing.make_batch)."""

import numpy as np


def np_gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def np_layer_norm(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def np_dense(x, p):
    out = x @ np.asarray(p["kernel"], np.float64)
    return out + np.asarray(p["bias"], np.float64) if "bias" in p else out


def np_softmax(x, axis=-1):
    x = x - x.max(axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis, keepdims=True)


def np_table(table):
    """[..., V, D] embedding table as float64 with row 0 zero: torch's padding_idx=0 (SPEC 2)."""
    table = np.array(table, np.float64)
    table[..., 0, :] = 0.0
    return table


def np_spd_bias(table, spd):
    """table [1, V, H], spd [B, N, N] -> [B, H, N, N]."""
    return np_table(table)[0][spd].transpose(0, 3, 1, 2)


def np_edge_bias(table, hop_weights, path_edges, spd, max_hops=5):
    """SPEC 3: (1/n) sum_k x_k W_k, x_k = mean of the 3 bond-feature embeddings of hop k."""
    table = np_table(table)
    hop_weights = np.asarray(hop_weights, np.float64)
    b, n = spd.shape[:2]
    heads = table.shape[-1]
    out = np.zeros((b, heads, n, n))
    for m in range(b):
        for i in range(n):
            for j in range(n):
                s = spd[m, i, j]
                count = min(max(s - 1, 1), max_hops)
                total = np.zeros(heads)
                for k in range(max_hops):
                    x_k = np.mean([table[f, path_edges[m, i, j, k, f]] for f in range(3)], axis=0)
                    total += x_k @ hop_weights[k]
                out[m, :, i, j] = total / count
    return out


def np_distances(coords):
    delta = coords[:, None, :, :] - coords[:, :, None, :]
    return np.sqrt((delta**2).sum(-1)), delta


def np_gaussian_basis(p, coords, types, std_floor=0.01):
    """SPEC 3: psi_k = exp(-0.5((x - mu_k)/s_k)^2) / (sqrt(2 pi) s_k), x = gamma d + beta."""
    mul = np_table(p["mul"])[..., 0]
    bias = np_table(p["bias"])[..., 0]
    dist, _ = np_distances(np.asarray(coords, np.float64))
    gamma = mul[0][types][:, :, None] + mul[1][types][:, None, :]
    beta = bias[0][types][:, :, None] + bias[1][types][:, None, :]
    x = (gamma * dist + beta)[..., None]
    s = np.abs(np.asarray(p["stds"], np.float64)) + std_floor
    mu = np.asarray(p["means"], np.float64)
    return np.exp(-0.5 * ((x - mu) / s) ** 2) / (np.sqrt(2 * np.pi) * s)


def np_gaussian_bias(p, psi):
    return np_dense(np_gelu(np_dense(psi, p["hidden"])), p["out"]).transpose(0, 3, 1, 2)


def np_centrality(p, psi, atom_mask, scale=0.01):
    summed = (psi * atom_mask[:, None, :, None]).sum(2)
    return scale * np_dense(summed, p["proj"]) * atom_mask[..., None]


def np_split_qkv(p, x, num_heads):
    """Queries (scaled by 1/sqrt(head dim)), keys and values of x [B, N, D], each [B, H, N, D/H]."""
    b, n, d = x.shape
    hd = d // num_heads

    def heads(y):
        return y.reshape(b, n, num_heads, hd).transpose(0, 2, 1, 3)

    return (
        heads(np_dense(x, p["query"])) * hd**-0.5,
        heads(np_dense(x, p["key"])),
        heads(np_dense(x, p["value"])),
    )


def np_attention(p, x, bias, key_mask, num_heads):
    """Biased multi-head attention, masked keys, no dropout."""
    b, length, d = x.shape
    q, k, v = np_split_qkv(p, x, num_heads)
    logits = q @ k.transpose(0, 1, 3, 2) + bias
    logits = np.where(key_mask[:, None, None, :], logits, -1e9)
    ctx = (np_softmax(logits) @ v).transpose(0, 2, 1, 3).reshape(b, length, d)
    return np_dense(ctx, p["out"])


def np_encoder_layer(p, x, bias, key_mask, num_heads, eps=1e-5):
    """SPEC 2 post-LN: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""
    ln = lambda y, q: np_layer_norm(y, np.asarray(q["scale"]), np.asarray(q["bias"]), eps)
    x = ln(x + np_attention(p["attention"], x, bias, key_mask, num_heads), p["attention_norm"])
    return ln(x + np_dense(np_gelu(np_dense(x, p["fc1"])), p["fc2"]), p["ffn_norm"])


def np_encoder(p, cfg, batch, pair_modality, node_3d, coords=None):
    """Whole MoleBlendEncoder (pretrain mode, eval) from the SPEC formulas."""
    feats = batch["atom_features"]
    mask = batch["atom_mask"]
    spd = batch["spd"]
    coords = batch["coords"] if coords is None else coords
    b, n = mask.shape
    atom_table = np_table(p["atom_embed"]["embed"]["embedding"])
    atoms = sum(atom_table[f][feats[..., f]] for f in range(9))
    degree = (spd == 2).sum(-1)
    degree_ids = np.where(mask, np.clip(degree + 1, 1, cfg.num_degree_ids - 1), 0)
    degree_emb = sum(
        np_table(p["degree_embed"][side]["embedding"])[0][degree_ids] for side in ("in", "out")
    )
    psi = np_gaussian_basis(p["gaussian_basis"], coords, feats[..., 0], cfg.gaussian_std_floor)
    centrality = np_centrality(p["centrality"], psi, mask, cfg.centrality_scale)
    node = np.where(node_3d[..., None], centrality, degree_emb)
    spd_b = np_spd_bias(p["spd_bias"]["embed"]["embedding"], spd)
    edge_b = np_edge_bias(
        p["edge_bias"]["embedding"],
        p["edge_bias"]["hop_weights"],
        batch["path_edges"],
        spd,
    )
    bias_3d = np_gaussian_bias(p["gaussian_bias"], psi)
    modality = np.broadcast_to(pair_modality, (b, n, n))[:, None]
    atom_bias = np.where(modality == 0, spd_b, np.where(modality == 1, edge_b, bias_3d))
    token = np.asarray(p["graph_token"]["token"], np.float64)
    t = np.asarray(p["graph_token"]["attention_bias"], np.float64)
    x = np.concatenate([np.broadcast_to(token, (b, 1, token.size)), atoms + node], axis=1)
    x = np_layer_norm(
        x, np.asarray(p["input_norm"]["scale"]), np.asarray(p["input_norm"]["bias"]), 1e-5
    )
    heads = cfg.num_heads
    full = np.broadcast_to(t[None, :, None, None], (b, heads, n + 1, n + 1)).copy()
    full[:, :, 1:, 1:] = atom_bias
    key_mask = np.concatenate([np.ones((b, 1), bool), mask], axis=1)
    for i in range(cfg.num_layers):
        x = np_encoder_layer(p[f"layer_{i}"], x, full, key_mask, heads, cfg.layer_norm_eps)
    return x[:, 0], x[:, 1:] * mask[..., None], atom_bias


def np_pair_transform(p, h, eps=1e-12):
    r = np_gelu(np_dense(h, p["dense"]))
    return np_layer_norm(r, np.asarray(p["norm"]["scale"]), np.asarray(p["norm"]["bias"]), eps)


def np_outer_features(p, h):
    """SPEC 5: z_ij = flatten(r_i outer c_j) [B, N, N, P*P], materialised."""
    r = np_pair_transform(p["row"], h)
    c = np_pair_transform(p["col"], h)
    z = r[:, :, None, :, None] * c[:, None, :, None, :]
    return z.reshape(*z.shape[:3], -1)


def np_pair_head(p, h):
    return np_dense(np_outer_features(p, h), p["linear"])


def np_direction_head(p, h):
    hidden = np_dense(np_outer_features(p, h), p["linear"])
    return np.concatenate([np_dense(hidden, p[f"proj_{a}"]) for a in "xyz"], -1)


def np_denoise_head(p, h, atom_bias, coords, atom_mask, num_heads, tied=False):
    """SPEC 5: out_i[a] = Linear_a(sum_j alpha_ij u_ij[a] v_j)."""
    b, n, d = h.shape
    q, k, v = np_split_qkv(p, h, num_heads)
    logits = np.where(atom_mask[:, None, None, :], q @ k.transpose(0, 1, 3, 2) + atom_bias, -1e9)
    alpha = np_softmax(logits)
    dist, delta = np_distances(np.asarray(coords, np.float64))
    unit = np.where(dist[..., None] > 0, delta / np.where(dist > 0, dist, 1)[..., None], 0)
    out = np.zeros((b, n, 3))
    for a in range(3):
        x = np.einsum("bhij,bij,bhjd->bihd", alpha, unit[..., a], v).reshape(b, n, d)
        proj = p["proj"] if tied else p[f"proj_{'xyz'[a]}"]
        out[..., a] = np_dense(x, proj)[..., 0]
    return out * atom_mask[..., None]
