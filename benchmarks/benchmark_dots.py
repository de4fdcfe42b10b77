"""The three dots of a Linear layer at a model's layer shape, in each formulation (GFLOP/s).

  python benchmarks/benchmark_dots.py --out=benchmarks/dots_cpu.json               # base
  python benchmarks/benchmark_dots.py --out=benchmarks/dots_cpu_tiny.json --hidden=128

x [B, L, K] @ w [K, N] (B 32, L 33 tokens, K = N = --hidden): the forward (NN), the input gradient
g @ w^T (NT) and the weight gradient x^T g (TN, contracting the tokens), in fp32, bf16 -> bf16,
bf16 -> fp32 as autodiff lays it out, the weight gradient as model/precision.py computes it, and
with the tokens flattened to [B*L, K] (plain, and with x^T materialised first). Variants
alternate within each round; medians.
"""

import json
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from jax import lax

from moleblend_jax.model import precision

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Output JSON file.", required=True)
flags.DEFINE_integer("rounds", 9, "Rounds; each times every variant once.")
flags.DEFINE_integer("calls", 10, "Calls per variant and round.")
flags.DEFINE_integer("hidden", 768, "Layer width K = N (768 base, 128 tiny).")

B, L = 32, 33
F32, BF16 = jnp.float32, jnp.bfloat16


def _dot(lhs_contract, rhs_contract, preferred=None):
    dims = ((lhs_contract, rhs_contract), ((), ()))
    return lambda a, b: lax.dot_general(a, b, dims, preferred_element_type=preferred)


def variants(K: int, N: int):
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (B, L, K))
    w = jax.random.normal(jax.random.fold_in(key, 1), (K, N))
    g = jax.random.normal(jax.random.fold_in(key, 2), (B, L, N))
    xb, wb, gb = x.astype(BF16), w.astype(BF16), g.astype(BF16)
    return {
        "forward NN fp32": (_dot((2,), (0,)), x, w),
        "forward NN bf16->bf16": (_dot((2,), (0,)), xb, wb),
        "forward NN bf16->fp32": (_dot((2,), (0,), F32), xb, wb),
        "input grad NT fp32": (_dot((2,), (1,)), g, w),
        "input grad NT bf16->fp32": (_dot((2,), (1,), F32), gb, wb),
        "weight grad TN fp32": (_dot((0, 1), (0, 1)), x, g),
        "weight grad TN bf16->fp32": (_dot((0, 1), (0, 1), F32), xb, gb),
        "weight grad TN fp32 cotangent x bf16": (_dot((0, 1), (0, 1), F32), xb, g),
        "weight grad, precision.py": (precision._weight_gradient, xb, gb),  # Under test.
        "weight grad TN bf16->fp32, tokens flattened [B*L, K]": (
            _dot((0,), (0,), F32),
            xb.reshape(B * L, K),
            gb.reshape(B * L, N),
        ),
        "weight grad, tokens flattened, transposed in memory first": (
            _transposed_weight_gradient,
            xb.reshape(B * L, K),
            gb.reshape(B * L, N),
        ),
    }


def _transposed_weight_gradient(x, g):
    """x [M, K]^T g [M, N] with x^T materialised (a barrier keeps XLA from folding it back)."""
    xt = lax.optimization_barrier(x.T.reshape(-1)).reshape(x.shape[1], x.shape[0])
    return lax.dot_general(xt, g, (((1,), (0,)), ((), ())), preferred_element_type=F32)


def _cpu_model() -> str:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv):
    del argv
    K = N = FLAGS.hidden
    cases = {name: (jax.jit(fn), a, b) for name, (fn, a, b) in variants(K, N).items()}
    for fn, a, b in cases.values():
        fn(a, b).block_until_ready()
    rates = {name: [] for name in cases}
    flops = 2 * B * L * K * N
    for _ in range(FLAGS.rounds):
        for name, (fn, a, b) in cases.items():
            start = time.perf_counter()
            for _ in range(FLAGS.calls):
                out = fn(a, b)
            out.block_until_ready()
            rates[name].append(flops * FLAGS.calls / (time.perf_counter() - start) / 1e9)
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "jax": jax.__version__,
            "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "shape": {"B": B, "L": L, "K": K, "N": N},
        "gflops_median": {k: round(statistics.median(v), 1) for k, v in rates.items()},
        "gflops_all": {k: [round(r, 1) for r in v] for k, v in rates.items()},
    }
    for k, v in result["gflops_median"].items():
        print(f"{k:52s} {v:7.1f} GFLOP/s")
    pathlib.Path(FLAGS.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    app.run(main)
