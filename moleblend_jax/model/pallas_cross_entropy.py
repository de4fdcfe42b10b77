"""A pair head's logits and their cross entropy as one Pallas TPU kernel per direction (issue 29).

The edge head's logits are [B, N, K * C, N] fp32 (5 hops x 24 classes per atom pair), the
step's largest tensor: XLA writes them, their softmax pieces and their gradient to HBM between
fusions, ~2 GB per step of the paper's TPU program. The head is a product of two factors
(`FactoredLogits`: the row transform times the head's kernel, and the column transform), so
these kernels form the logits in on-chip memory from the factors, block by block, and write
only the per-item loss; the backward pass recomputes them and writes the factors' gradients.

Grid (molecule, chunk of S rows i): the chunk's [S * K * C, P] row factors against the
molecule's [N, P] column factors give its [S * K * C, N] logits; classes are a sublane axis
of the [S * K, C, N] view (C padded to a multiple of 8). The same math without Pallas is
`reference_cross_entropy`; off TPU the kernels run in Pallas's interpreter only for tests.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from moleblend_jax.model import platform
from moleblend_jax.model.layers import LARGE_NEGATIVE


class FactoredLogits(NamedTuple):
    """Logits[b, i, k, c, j] = rows[b, (i, k, c)] . cols[b, j] + bias[k, c], never formed."""

    rows: jax.Array  # [B, N * K * C, P], matmul dtype: the row transform times the kernel.
    cols: jax.Array  # [B, N, P], matmul dtype: the column transform.
    bias: jax.Array  # [K, C] float32.

    def dense(self) -> jax.Array:
        """The [B, N, K, C, N] float32 logits themselves."""
        batch, num_atoms, _ = self.cols.shape
        logits = jnp.einsum(
            "bxp,bjp->bxj", self.rows, self.cols, preferred_element_type=jnp.float32
        )
        return logits.reshape(batch, num_atoms, *self.bias.shape, num_atoms) + self.bias[..., None]


def reference_cross_entropy(
    logits: FactoredLogits, labels: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """`cross_entropy`'s math in plain jax.numpy, through the dense logits."""
    dense = logits.dense()
    log_partition = jax.nn.logsumexp(dense, axis=3)
    label_logit = jnp.take_along_axis(dense, labels[:, :, :, None], axis=3)[:, :, :, 0]
    correct = label_logit >= jnp.max(dense, axis=3)
    return log_partition - label_logit, correct


def _chunk_atoms(num_atoms: int) -> int:
    """Rows i per grid step: 16 or 8 where that divides N (S * K label rows then tile by 8),
    else the whole molecule (a block may span a whole axis)."""
    return next((size for size in (16, 8) if num_atoms % size == 0), num_atoms)


class _Kernels:
    """Kernel bodies for one static shape: a grid step is S rows i of one molecule."""

    def __init__(self, chunk: int, num_hops: int, num_classes: int, interpret: bool):
        self.chunk, self.num_hops, self.num_classes = chunk, num_hops, num_classes
        self.interpret = interpret
        self._contract = functools.partial(platform.kernel_dot, interpret=interpret)

    def _softmax_pieces(self, bias_ref, labels_ref, rows_ref, cols_ref):
        """-> ([S*K, C, N] fp32 exp(logit - max), [S*K, 1, N] their sum, [S*K, C, N] bool
        one-hot of the labels, [S*K, N] fp32 label logit - max)."""
        num_atoms = cols_ref.shape[1]
        logits = self._contract(rows_ref[0], cols_ref[0], 1, 1)  # [S * K * C, N]
        logits = logits.reshape(self.chunk, -1, num_atoms) + bias_ref[0][None]
        logits = logits.reshape(self.chunk * self.num_hops, self.num_classes, num_atoms)
        shifted = logits - jnp.max(logits, axis=1, keepdims=True)
        exp = jnp.exp(shifted)
        classes = jax.lax.broadcasted_iota(jnp.int32, shifted.shape, 1)
        one_hot = classes == labels_ref[0][:, None, :]
        label_logit = jnp.sum(jnp.where(one_hot, shifted, 0.0), axis=1)
        return exp, jnp.sum(exp, axis=1, keepdims=True), one_hot, label_logit

    def forward(self, bias_ref, labels_ref, rows_ref, cols_ref, nll_ref, correct_ref):
        _, partition, _, label_logit = self._softmax_pieces(
            bias_ref, labels_ref, rows_ref, cols_ref
        )
        nll_ref[0] = jnp.log(partition[:, 0, :]) - label_logit
        correct_ref[0] = (label_logit >= 0.0).astype(jnp.float32)

    def backward(
        self, bias_ref, labels_ref, rows_ref, cols_ref, d_nll_ref,
        d_bias_ref, d_rows_ref, d_cols_ref,
    ):  # fmt: skip
        exp, partition, one_hot, _ = self._softmax_pieces(bias_ref, labels_ref, rows_ref, cols_ref)
        d_logits = (exp / partition - one_hot.astype(jnp.float32)) * d_nll_ref[0][:, None, :]
        num_atoms = cols_ref.shape[1]
        d_bias_ref[0, 0] = jnp.sum(
            jnp.sum(d_logits.reshape(self.chunk, -1, num_atoms), axis=0), axis=1, keepdims=True
        )
        d_logits = d_logits.reshape(-1, num_atoms).astype(rows_ref.dtype)  # [S * K * C, N]
        d_rows_ref[0] = self._contract(d_logits, cols_ref[0], 1, 0).astype(d_rows_ref.dtype)
        d_cols_ref[0, 0] = self._contract(d_logits, rows_ref[0], 0, 0)


def _call(kernels: _Kernels, backward: bool, bias, labels, rows, cols, *d_nll):
    """One direction over grid (molecule, chunk): [B, O, 1] bias (O = K * C), [B, N * K, N]
    labels, [B, N * O, P] rows, [B, N, P] cols (and [B, N * K, N] d_nll)."""
    batch, num_atoms, width = cols.shape
    outputs = bias.shape[1]
    chunk = kernels.chunk
    num_chunks = num_atoms // chunk
    per_item = pl.BlockSpec((1, chunk * kernels.num_hops, num_atoms), lambda b, c: (b, c, 0))
    rows_spec = pl.BlockSpec((1, chunk * outputs, width), lambda b, c: (b, c, 0))
    in_specs = [
        pl.BlockSpec((1, outputs, 1), lambda b, c: (b, 0, 0)),
        per_item,
        rows_spec,
        pl.BlockSpec((1, num_atoms, width), lambda b, c: (b, 0, 0)),
    ]
    item_shape = jax.ShapeDtypeStruct(labels.shape, jnp.float32)
    if backward:
        body, in_specs = kernels.backward, [*in_specs, per_item]
        out_specs = [
            pl.BlockSpec((1, 1, outputs, 1), lambda b, c: (b, c, 0, 0)),
            rows_spec,
            pl.BlockSpec((1, 1, num_atoms, width), lambda b, c: (b, c, 0, 0)),
        ]
        out_shape = [
            jax.ShapeDtypeStruct((batch, num_chunks, outputs, 1), jnp.float32),
            jax.ShapeDtypeStruct(rows.shape, rows.dtype),
            jax.ShapeDtypeStruct((batch, num_chunks, num_atoms, width), jnp.float32),
        ]
    else:
        body, out_specs, out_shape = kernels.forward, [per_item] * 2, [item_shape] * 2
    return pl.pallas_call(
        body,
        grid=(batch, num_chunks),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")),
        interpret=kernels.interpret,
    )(bias, labels, rows, cols, *d_nll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _cross_entropy(kernels, bias, labels, rows, cols):
    return tuple(_call(kernels, False, bias, labels, rows, cols))


def _cross_entropy_fwd(kernels, bias, labels, rows, cols):
    return _cross_entropy(kernels, bias, labels, rows, cols), (bias, labels, rows, cols)


def _cross_entropy_bwd(kernels, residuals, cotangents):
    bias, labels, rows, cols = residuals
    d_nll, _ = cotangents  # `correct` has no gradient.
    d_bias, d_rows, d_cols = _call(kernels, True, bias, labels, rows, cols, d_nll)
    d_cols = jnp.sum(d_cols, axis=1).astype(cols.dtype)
    return jnp.sum(d_bias, axis=1), None, d_rows, d_cols


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def cross_entropy(
    logits: FactoredLogits, labels: jax.Array, interpret: bool = False
) -> tuple[jax.Array, jax.Array]:
    """FactoredLogits of [B, N, K, C, N] logits (K = 1: one label per pair), [B, N, K, N] int
    labels < C -> ([B, N, K, N] fp32 negative log-likelihood over the classes, [B, N, K, N]
    bool whether the label's logit is the largest). Gradients flow to the factors and the
    bias; fp32 math inside. In Pallas's interpreter with `interpret` or inside
    `platform.interpreted()`.

    Over a mesh set by `platform.batch_sharded`, runs per device on its molecules (shard_map).
    """
    rows, cols, bias = logits
    batch, num_atoms, width = cols.shape
    num_hops, num_classes = bias.shape
    if num_classes % 8:  # Classes are a sublane axis: pad them with never-chosen ones.
        padding = -num_classes % 8
        rows = rows.reshape(batch, num_atoms * num_hops, num_classes, width)
        rows = jnp.pad(rows, ((0, 0), (0, 0), (0, padding), (0, 0))).reshape(batch, -1, width)
        bias = jnp.pad(bias, ((0, 0), (0, padding)), constant_values=LARGE_NEGATIVE)
        num_classes += padding
    interpret = interpret or platform.interpreting()
    kernels = _Kernels(_chunk_atoms(num_atoms), num_hops, num_classes, interpret)
    # One [O, 1] column per molecule (its gradient is summed over molecules outside).
    bias = jnp.broadcast_to(bias.reshape(1, -1, 1), (batch, num_hops * num_classes, 1))
    labels = labels.astype(jnp.int32).reshape(batch, num_atoms * num_hops, num_atoms)

    def run(bias, labels, rows, cols, first_molecule):
        del first_molecule  # The loss draws nothing.
        return _cross_entropy(kernels, bias, labels, rows, cols)

    nll, correct = platform.per_batch_shard(run, (bias, labels, rows, cols))
    shape = (batch, num_atoms, num_hops, num_atoms)
    return nll.reshape(shape), correct.reshape(shape) > 0
