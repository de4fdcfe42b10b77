"""Prediction heads (SPEC 5): SPD, edge and 3D-direction pair heads, and the denoising head.

Pair heads are linear in z_ij = flatten(r_i outer c_j); they contract the Linear(1024 -> out)
kernel, reshaped to [32, 32, out], with r then c and never build [B, N, N, 1024] (SPEC 9).
Params keep the natural Dense(1024 -> out) shapes of the original ("linear/kernel" [1024, out]).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from moleblend_jax.model.attention import split_heads
from moleblend_jax.model.layers import (
    Dtype,
    LayerNorm32,
    dense,
    gelu,
    logical,
    masked_softmax,
    normal_init,
)

AXES = ("x", "y", "z")


class PairTransform(nn.Module):
    """SPEC 5: r_i = LN(GELU(W h_i)) in R^P, LN eps 1e-12 in fp32."""

    pair_dim: int
    layer_norm_eps: float
    dtype: Dtype
    init_std: float = 0.02

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """[B, N, D] -> [B, N, P] float32."""
        r = dense(
            self.pair_dim, ("embed", "pair"), std=self.init_std, dtype=self.dtype, name="dense"
        )(h)
        return LayerNorm32(self.layer_norm_eps, jnp.float32, axis_name="pair", name="norm")(gelu(r))


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


def outer_product_linear(
    row: jax.Array, col: jax.Array, kernel: jax.Array, bias: jax.Array, dtype: Dtype
) -> jax.Array:
    """[B, N, P] r, [B, N, P] c, [P*P, O] kernel, [O] bias -> [B, N, N, O] float32.

    Equals flatten(r_i outer c_j) @ kernel + bias (row-major flatten, as torch) without
    materialising the [B, N, N, P*P] pair features (SPEC 9).
    """
    p = row.shape[-1]
    weight = kernel.reshape(p, p, -1).astype(dtype)
    row_weight = jnp.einsum("bip,pqo->bioq", row.astype(dtype), weight)
    out = jnp.einsum(
        "bioq,bjq->bijo", row_weight, col.astype(dtype), preferred_element_type=jnp.float32
    )
    return out + bias


class PairHead(nn.Module):
    """Row/column transforms + Linear(P*P -> out) on the outer product (SPEC 5)."""

    out_features: int
    pair_dim: int
    layer_norm_eps: float
    dtype: Dtype
    init_std: float = 0.02

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """[B, N, D] atom states -> [B, N, N, out] float32 logits."""
        args = (self.pair_dim, self.layer_norm_eps, self.dtype, self.init_std)
        row = PairTransform(*args, name="row")(h)
        col = PairTransform(*args, name="col")(h)
        kernel, bias = DenseParams(
            self.pair_dim**2, self.out_features, self.init_std, name="linear"
        )()
        return outer_product_linear(row, col, kernel, bias, self.dtype)


class DirectionHead(PairHead):
    """SPEC 5 3D head: Linear(P*P -> hidden) then Linear(hidden -> 1) for each of x, y, z.

    The original has no activation between the two, so the chain is linear: it is contracted as
    one [P*P, 3] map (kernel @ [w_x w_y w_z]) with the outer product, same numbers, no
    [B, N, N, hidden] tensor. Here out_features is the hidden width (256).
    """

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """[B, N, D] atom states -> [B, N, N, 3] float32 predicted r_j - r_i directions."""
        args = (self.pair_dim, self.layer_norm_eps, self.dtype, self.init_std)
        row = PairTransform(*args, name="row")(h)
        col = PairTransform(*args, name="col")(h)
        kernel, bias = DenseParams(
            self.pair_dim**2, self.out_features, self.init_std, name="linear"
        )()
        axis_params = [
            DenseParams(self.out_features, 1, self.init_std, name=f"proj_{a}")() for a in AXES
        ]
        axis_kernel = jnp.concatenate([k for k, _ in axis_params], axis=1)  # [hidden, 3]
        axis_bias = jnp.concatenate([b for _, b in axis_params], axis=0)  # [3]
        composed_kernel = kernel @ axis_kernel
        composed_bias = bias @ axis_kernel + axis_bias
        return outer_product_linear(row, col, composed_kernel, composed_bias, self.dtype)


class DenoiseHead(nn.Module):
    """SPEC 5 Transformer-M atom head: equivariant-style attention over unit vectors.

    alpha = softmax(q_i.k_j / sqrt(d) + bias_ij, masked keys); x_i[a] = sum_j alpha_ij u_ij[a] v_j;
    out_i[a] = Linear_a(x_i[a]). tied=True: one bias-free Linear for all axes (exactly equivariant).
    """

    num_heads: int
    dropout_rate: float
    tied: bool
    dtype: Dtype
    init_std: float = 0.02

    @nn.compact
    def __call__(
        self,
        h: jax.Array,
        atom_bias: jax.Array,
        unit: jax.Array,
        atom_mask: jax.Array,
        train: bool,
    ) -> jax.Array:
        """[B, N, D] states, [B, H, N, N] fp32 bias, [B, N, N, 3] unit r_i->r_j, [B, N] bool
        -> [B, N, 3] float32 predicted noise (zero at padding)."""
        hidden = h.shape[-1]
        head_dim = hidden // self.num_heads

        def proj(name):
            return dense(hidden, ("embed", "kv"), std=self.init_std, dtype=self.dtype, name=name)

        h = h.astype(self.dtype)
        q = split_heads(proj("query")(h), self.num_heads) * jnp.asarray(head_dim**-0.5, self.dtype)
        k = split_heads(proj("key")(h), self.num_heads)
        v = split_heads(proj("value")(h), self.num_heads)
        logits = jnp.einsum("bihd,bjhd->bhij", q, k, preferred_element_type=jnp.float32)
        probs = masked_softmax(logits + atom_bias, atom_mask)
        probs = nn.Dropout(self.dropout_rate)(probs, deterministic=not train)
        directed = probs[..., None] * unit[:, None].astype(jnp.float32)  # [B, H, N, N, 3]
        x = jnp.einsum("bhija,bjhd->biahd", directed.astype(self.dtype), v)
        x = x.reshape(*x.shape[:3], hidden)  # [B, N, 3, D]
        if self.tied:
            out = dense(
                1,
                ("embed", "classes"),
                std=self.init_std,
                dtype=self.dtype,
                use_bias=False,
                name="proj",
            )(x)[..., 0]
        else:
            out = jnp.stack(
                [
                    dense(
                        1,
                        ("embed", "classes"),
                        std=self.init_std,
                        dtype=self.dtype,
                        name=f"proj_{a}",
                    )(x[:, :, i])[..., 0]
                    for i, a in enumerate(AXES)
                ],
                axis=-1,
            )
        return jnp.where(atom_mask[..., None], out.astype(jnp.float32), 0.0)
