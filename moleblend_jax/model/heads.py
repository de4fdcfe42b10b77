"""Prediction heads (SPEC 5): SPD, edge and 3D-direction pair heads, and the denoising head.

Pair heads are linear in z_ij = flatten(r_i outer c_j); they contract the Linear(1024 -> out)
kernel, reshaped to [32, 32, out], with r then c and never build [B, N, N, 1024] (SPEC 9).
Params keep the natural Dense(1024 -> out) shapes of the original ("linear/kernel" [1024, out]).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from moleblend_jax.model import precision
from moleblend_jax.model.attention import split_heads
from moleblend_jax.model.config import ModelConfig
from moleblend_jax.model.layers import (
    Dropout,
    Dtype,
    LayerNorm32,
    dense,
    gelu,
    logical,
    masked_softmax,
    normal_init,
    pair_geometry,
)
from moleblend_jax.model.pallas_cross_entropy import FactoredLogits

AXES = ("x", "y", "z")


class PairTransform(nn.Module):
    """SPEC 5: r_i = LN(GELU(W h_i)) in R^P (P = pair_head_dim), LN (head_layer_norm_eps) fp32."""

    config: ModelConfig

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """[B, N, D] -> [B, N, P] float32."""
        cfg = self.config
        r = dense(
            cfg.pair_head_dim,
            ("embed", "pair"),
            std=cfg.init_std,
            dtype=cfg.jnp_dtype,
            name="dense",
        )(h)
        norm = LayerNorm32(
            epsilon=cfg.head_layer_norm_eps, dtype=jnp.float32, axis_name="pair", name="norm"
        )
        return norm(gelu(r))


class DenseParams(nn.Module):
    """The params of a Dense(in -> out) layer, returned instead of applied."""

    in_features: int
    out_features: int
    init_std: float = 0.02

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        """-> ([in, out] kernel, [out] bias), float32."""
        kernel = self.param(
            "kernel",
            logical(normal_init(self.init_std), ("pair_outer", "classes")),
            (self.in_features, self.out_features),
            jnp.float32,
        )
        bias = self.param(
            "bias",
            logical(nn.initializers.zeros_init(), ("classes",)),
            (self.out_features,),
            jnp.float32,
        )
        return kernel, bias


def _row_factors(row: jax.Array, kernel: jax.Array, dtype: Dtype) -> jax.Array:
    """[B, N, P] r, [P*P, O] kernel -> [B, N * O, P] float32 rows (i, o): r_i's contraction
    with the kernel, what each c_j is dotted with. One matmul, [B*N, P] @ [P, O*P]."""
    batch, num_atoms, p = row.shape
    out_features = kernel.shape[-1]
    weight = kernel.reshape(p, p, out_features).transpose(0, 2, 1).reshape(p, out_features * p)
    row_weight = precision.matmul(row, weight, dtype)  # [b, i, (o, q)]
    return row_weight.reshape(batch, num_atoms * out_features, p)


def outer_product_linear(
    row: jax.Array,
    col: jax.Array,
    kernel: jax.Array,
    bias: jax.Array,
    dtype: Dtype,
    classes_before_j: bool = False,
) -> jax.Array:
    """[B, N, P] r, [B, N, P] c, [P*P, O] kernel, [O] bias -> [B, N, N, O] float32
    ([B, N, O, N] with classes_before_j: the matmul's own layout, no transpose).

    Equals flatten(r_i outer c_j) @ kernel + bias (row-major flatten, as torch) without
    materialising the [B, N, N, P*P] pair features (SPEC 9). Two plain matmuls in the
    layouts XLA:CPU runs fastest: [B*N, P] @ [P, O*P], then per molecule [N*O, P] @ [P, N].
    """
    batch, num_atoms, _ = row.shape
    out_features = kernel.shape[-1]
    row_weight = _row_factors(row, kernel, dtype)  # [b, (i, o), q]
    out = precision.einsum("bxq,bjq->bxj", row_weight, col, dtype)
    out = out.reshape(batch, num_atoms, out_features, num_atoms)
    if classes_before_j:
        return out + bias[:, None]
    return out.transpose(0, 1, 3, 2) + bias


class PairHead(nn.Module):
    """Row/column transforms + Linear(P*P -> out_features) on the outer product (SPEC 5)."""

    config: ModelConfig
    out_features: int
    classes_before_j: bool = False  # Output [B, N, out', N] instead.
    factored: bool = False  # Output the logits' FactoredLogits instead (bias [out']).

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array | FactoredLogits:
        """[B, N, D] atom states -> [B, N, N, out'] float32, out' from `output_map`."""
        cfg = self.config
        row = PairTransform(config=cfg, name="row")(h)
        col = PairTransform(config=cfg, name="col")(h)
        kernel, bias = DenseParams(
            in_features=cfg.pair_head_dim**2,
            out_features=self.out_features,
            init_std=cfg.init_std,
            name="linear",
        )()
        kernel, bias = self.output_map(kernel, bias)
        if self.factored:
            dtype = cfg.jnp_dtype
            rows = _row_factors(row, kernel, dtype).astype(dtype)
            return FactoredLogits(rows, col.astype(dtype), bias)
        return outer_product_linear(
            row, col, kernel, bias, cfg.jnp_dtype, classes_before_j=self.classes_before_j
        )

    def output_map(self, kernel: jax.Array, bias: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The linear map applied to z_ij: here Linear(P*P -> out) itself."""
        return kernel, bias


class DirectionHead(PairHead):
    """SPEC 5 3D head: Linear(P*P -> hidden) then Linear(hidden -> 1) for each of x, y, z.

    The original has no activation between the two, so the chain is linear: it is contracted as
    one [P*P, 3] map (kernel @ [w_x w_y w_z]) with the outer product, same numbers, no
    [B, N, N, hidden] tensor. Here out_features is the hidden width
    (config.direction_hidden_dim, 256); the output is [B, N, N, 3], the predicted r_j - r_i
    directions.
    """

    def output_map(self, kernel: jax.Array, bias: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[P*P, hidden], [hidden] -> the composed [P*P, 3] kernel and [3] bias."""
        axis_params = [
            DenseParams(
                in_features=self.out_features,
                out_features=1,
                init_std=self.config.init_std,
                name=f"proj_{a}",
            )()
            for a in AXES
        ]
        axis_kernel = jnp.concatenate([k for k, _ in axis_params], axis=1)  # [hidden, 3]
        axis_bias = jnp.concatenate([b for _, b in axis_params], axis=0)  # [3]
        return kernel @ axis_kernel, bias @ axis_kernel + axis_bias


class DenoiseHead(nn.Module):
    """SPEC 5 Transformer-M atom head: equivariant-style attention over unit vectors.

    alpha = softmax(q_i.k_j / sqrt(d) + bias_ij, masked keys); x_i[a] = sum_j alpha_ij u_ij[a] v_j;
    out_i[a] = Linear_a(x_i[a]). config.tied_denoise_head: one bias-free Linear for all axes
    (exactly equivariant). Attention-prob dropout config.denoise_attention_dropout.
    """

    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        h: jax.Array,
        atom_bias: jax.Array,
        coords: jax.Array,
        atom_mask: jax.Array,
        train: bool,
    ) -> jax.Array:
        """[B, N, D] states, [B, H, N, N] fp32 bias, [B, N, 3] coordinates (the noisy ones in
        pretraining), [B, N] bool -> [B, N, 3] float32 predicted noise (zero at padding)."""
        cfg = self.config
        dtype, heads, hidden = cfg.jnp_dtype, cfg.num_heads, h.shape[-1]
        head_dim = hidden // heads

        def proj(name, features=hidden, axes=("embed", "kv"), use_bias=True):
            return dense(
                features, axes, std=cfg.init_std, dtype=dtype, use_bias=use_bias, name=name
            )

        q = split_heads(proj("query")(h), heads) * head_dim**-0.5
        k = split_heads(proj("key")(h), heads)
        v = split_heads(proj("value")(h), heads)  # [B, N, H, d] float32
        logits = precision.einsum("bihd,bjhd->bhij", q, k, dtype)
        probs = masked_softmax(logits + atom_bias, atom_mask)
        probs = Dropout(rate=cfg.denoise_attention_dropout)(probs, deterministic=not train)
        x = _sum_over_unit_vectors(probs, coords, atom_mask, v)  # [B, N, 3, H, d]
        x = x.reshape(*x.shape[:3], hidden)
        out_axes = ("embed", "classes")
        if cfg.tied_denoise_head:
            out = proj("proj", 1, out_axes, use_bias=False)(x)[..., 0]
        else:
            out = jnp.stack(
                [proj(f"proj_{a}", 1, out_axes)(x[:, :, i])[..., 0] for i, a in enumerate(AXES)],
                axis=-1,
            )
        return jnp.where(atom_mask[..., None], out.astype(jnp.float32), 0.0)


def _sum_over_unit_vectors(
    probs: jax.Array, coords: jax.Array, atom_mask: jax.Array, values: jax.Array
) -> jax.Array:
    """sum_j alpha_ij u_ij[a] v_j: [B, H, N, N] alpha, [B, N, 3], [B, N] bool, [B, N, H, d]
    -> [B, N, 3, H, d] float32, with u_ij the unit vector r_i -> r_j (0 when r_i = r_j).

    Expanded as sum_j w_ij r_j[a] v_j - r_i[a] sum_j w_ij v_j with w_ij = alpha_ij / d_ij: one
    [N, N] @ [N, 4 d] matmul per head instead of a [B, H, N, N, 3] tensor and its transposes.
    Coordinates are centred first so the subtraction cancels little; all in float32.
    """
    mask = atom_mask[..., None].astype(jnp.float32)
    coords = coords.astype(jnp.float32)
    centroid = jnp.sum(coords * mask, axis=1, keepdims=True) / jnp.maximum(
        jnp.sum(mask, axis=1, keepdims=True), 1.0
    )
    coords = (coords - centroid) * mask
    distance, _ = pair_geometry(coords)
    weights = (
        probs * jnp.where(distance > 0, 1.0 / jnp.where(distance > 0, distance, 1.0), 0.0)[:, None]
    )
    moments = jnp.concatenate([coords, jnp.ones_like(coords[..., :1])], axis=-1)  # [B, N, 4]
    weighted_values = moments[:, :, None, :, None] * values[:, :, :, None, :]  # [B, N, H, 4, d]
    sums = jnp.einsum("bhij,bjhad->biahd", weights, weighted_values)  # [B, N, 4, H, d]
    return sums[:, :, :3] - coords[:, :, :, None, None] * sums[:, :, 3:]
