"""Mixed precision in one place: bf16 operands, fp32 accumulation and fp32 results (STYLE).

Every matmul and einsum of the model goes through `dot_general(dtype)` (what `layers.dense`
hands to `nn.Dense`) or `einsum(spec, a, b, dtype)`. With dtype float32 they are the plain
ops. With a 16-bit dtype both operands are cast to it, the product accumulates and returns in
float32, and the backward pass follows the same rule: the float32 cotangent is cast to the
16-bit dtype before its two dots, which again accumulate and return float32. Autodiff of a
mixed dot would instead pair a float32 cotangent with a 16-bit operand, a dot that XLA:CPU
runs on its slow mixed path (docs/model.md, "Mixed precision"); GPUs and TPUs want the same
16-bit operands.

The weight gradient of a Linear layer contracts over the tokens, the leading axes of both
operands. Flattened to [B*L, K], XLA:CPU runs that dot at a third of the forward's speed;
contracted over the unflattened (B, L) axes, at two thirds (benchmarks/dots_cpu.json).
"""

import functools
import re

import jax
import jax.numpy as jnp
from jax import lax

from moleblend_jax.model import platform

FLOAT32 = jnp.dtype(jnp.float32)


def is_mixed(dtype) -> bool:
    """Whether `dtype` is a 16-bit compute dtype (not float32)."""
    return jnp.dtype(dtype) != FLOAT32


def _contract_last(x: jax.Array, w: jax.Array) -> jax.Array:
    """[..., K] @ [K, N] -> [..., N] float32."""
    return lax.dot_general(
        x, w, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32
    )


def _transpose_in_memory(x: jax.Array, perm: tuple[int, ...]) -> jax.Array:
    """x.transpose(perm) with the new layout materialised.

    XLA would otherwise fold the transpose into the consuming dot's dimension numbers, and so
    back into the layout XLA:CPU runs slowly (or, for batched bf16 -> fp32 dots, not at all);
    a flattening reshape behind an optimisation barrier forces the copy. The new leading axis
    stays whole (callers keep the batch-sharded axis there), so no collective is needed.
    """
    y = x.transpose(perm)
    return lax.optimization_barrier(y.reshape(y.shape[0], -1)).reshape(y.shape)


def _weight_gradient(x: jax.Array, g: jax.Array) -> jax.Array:
    """sum over all leading axes of x[..., K]^T g[..., N] -> [K, N] float32.

    Contracted over the unflattened leading axes: XLA:CPU runs that at 2.5x the fp32 dot
    (benchmarks/dots_cpu.json); flattening the tokens to [B*L, K] first runs at half that.
    """
    lead = tuple(range(x.ndim - 1))
    return lax.dot_general(x, g, ((lead, lead), ((), ())), preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _mixed_matmul(x: jax.Array, w: jax.Array, dtype) -> jax.Array:
    return _contract_last(x.astype(dtype), w.astype(dtype))


def _mixed_matmul_fwd(x, w, dtype):
    x16, w16 = x.astype(dtype), w.astype(dtype)
    # Zero-size arrays carry the primal dtypes, which the cotangents must match.
    tags = (jnp.zeros((0,), x.dtype), jnp.zeros((0,), w.dtype))
    return _contract_last(x16, w16), (x16, w16, tags)


def _mixed_matmul_bwd(dtype, residuals, g):
    x16, w16, (x_tag, w_tag) = residuals
    g16 = g.astype(dtype)
    dx = lax.dot_general(
        g16, w16, (((g.ndim - 1,), (1,)), ((), ())), preferred_element_type=jnp.float32
    )
    return dx.astype(x_tag.dtype), _weight_gradient(x16, g16).astype(w_tag.dtype)


_mixed_matmul.defvjp(_mixed_matmul_fwd, _mixed_matmul_bwd)


def matmul(x: jax.Array, w: jax.Array, dtype) -> jax.Array:
    """[..., K] @ [K, N] -> [..., N]: float32 for a 16-bit `dtype`, else the plain product."""
    if not is_mixed(dtype):
        return x @ w
    return _mixed_matmul(x, w, jnp.dtype(dtype))


def dot_general(dtype):
    """A `lax.dot_general` for `nn.Dense(dot_general=...)` under the policy above."""
    if not is_mixed(dtype):
        return lax.dot_general

    def policy_dot_general(lhs, rhs, dimension_numbers, precision=None, **_):
        del precision
        if tuple(map(tuple, dimension_numbers[0])) != ((lhs.ndim - 1,), (0,)) or any(
            dimension_numbers[1]
        ):
            raise ValueError(f"Only [..., K] @ [K, N] is supported, got {dimension_numbers}.")
        return matmul(lhs, rhs, dtype)

    return policy_dot_general


def _einsum_terms(spec: str) -> tuple[str, str, str]:
    """ "ab,bc->ac" -> ("ab", "bc", "ac"); refuses what the transposed einsums cannot express."""
    match = re.fullmatch(r"([a-z]+),([a-z]+)->([a-z]*)", spec.replace(" ", ""))
    if not match:
        raise ValueError(f"einsum spec {spec!r}: need 'lhs,rhs->out' with letters only.")
    lhs, rhs, out = match.groups()
    for term, others in ((lhs, rhs + out), (rhs, lhs + out), (out, lhs + rhs)):
        if len(set(term)) != len(term) or not set(term) <= set(others):
            raise ValueError(f"einsum spec {spec!r}: every index must appear in two terms once.")
    return lhs, rhs, out


def _einsum32(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def _mixed_einsum32(spec: str, a16: jax.Array, b16: jax.Array) -> jax.Array:
    """`_einsum32` of 16-bit operands; on CPU the lhs laid out (batch, free, contracted) and
    the result computed in the dot's own (batch, lhs free, rhs free) order, then transposed.

    XLA:CPU runs a batched bf16 x bf16 -> fp32 dot only when the lhs contracts its minor
    axes; others fail at run time ("Unsupported element type for DotThunk"). Given another
    output order, XLA swaps the operands to produce it, and the swapped dot (the lhs then
    contracting a major axis) falls back to Eigen's slow single-threaded kernel: the edge
    head's column gradient alone took 6.6 ms of a 78 ms tiny step; the barrier keeps the
    dot as written (tiny bf16 step 1.24x, `benchmarks/README.md`).
    """
    lhs, rhs, out = _einsum_terms(spec)
    if platform.target() != "cpu":
        return _einsum32(spec, a16, b16)
    batch = [i for i in lhs if i in rhs and i in out]
    contracted = [i for i in lhs if i in rhs and i not in out]
    order = "".join(batch + [i for i in lhs if i not in rhs] + contracted)
    if order != lhs:
        a16 = _transpose_in_memory(a16, tuple(lhs.index(i) for i in order))
    natural = "".join(batch + [i for i in order if i not in rhs] + [i for i in rhs if i not in lhs])
    if natural == out:
        return _einsum32(f"{order},{rhs}->{out}", a16, b16)
    result = lax.optimization_barrier(_einsum32(f"{order},{rhs}->{natural}", a16, b16))
    return result.transpose(tuple(natural.index(i) for i in out))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def _mixed_einsum(spec: str, a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    return _mixed_einsum32(spec, a.astype(dtype), b.astype(dtype))


def _mixed_einsum_fwd(spec, a, b, dtype):
    a16, b16 = a.astype(dtype), b.astype(dtype)
    tags = (jnp.zeros((0,), a.dtype), jnp.zeros((0,), b.dtype))
    return _mixed_einsum32(spec, a16, b16), (a16, b16, tags)


def _mixed_einsum_bwd(spec, dtype, residuals, g):
    a16, b16, (a_tag, b_tag) = residuals
    lhs, rhs, out = _einsum_terms(spec)
    g16 = g.astype(dtype)
    da = _mixed_einsum32(f"{out},{rhs}->{lhs}", g16, b16)
    db = _mixed_einsum32(f"{lhs},{out}->{rhs}", a16, g16)
    return da.astype(a_tag.dtype), db.astype(b_tag.dtype)


_mixed_einsum.defvjp(_mixed_einsum_fwd, _mixed_einsum_bwd)


def einsum(spec: str, a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    """Two-operand einsum, float32 result; 16-bit operands (and cotangents) for a 16-bit dtype."""
    if not is_mixed(dtype):
        return _einsum32(spec, a, b)
    _einsum_terms(spec)
    return _mixed_einsum(spec, a, b, jnp.dtype(dtype))
