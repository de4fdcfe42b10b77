"""Data-path throughput: preprocessing, shard size, record reader and tf.data batches.

  python benchmarks/benchmark_data.py --out=benchmarks/data.json [--qm9_limit=20000]

Measures (molecules/s, wall clock, on whatever else the machine is running; the JSON records
the load average): preprocessing QM9 with its DFT coordinates (one process, and builds with 1
and 2 workers, local pool and Beam DirectRunner), preprocessing with RDKit ETKDG+MMFF
conformers (a subset), bytes per molecule, the plain-Python record reader, and padded tf.data
batches (batch 256, buckets (16, 32)).
"""

import argparse
import itertools
import json
import os
import platform
import tempfile
import time

from moleblend_jax.data import build_shards, iter_records
from moleblend_jax.data.featurize import process_chunk
from moleblend_jax.data.public_sets import qm9_source


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--qm9_limit", type=int, default=20_000)
    parser.add_argument("--conformer_molecules", type=int, default=200)
    parser.add_argument("--pipeline_batches", type=int, default=200)
    args = parser.parse_args()
    results = {}

    items = list(itertools.islice(qm9_source().items(), 3000))
    start = time.perf_counter()
    process_chunk(items, "file", 256, 0)
    results["preprocess_qm9_given_coords_1proc_mol_per_s"] = _rate(
        len(items), time.perf_counter() - start
    )
    subset = items[: args.conformer_molecules]
    start = time.perf_counter()
    process_chunk(subset, "rdkit", 256, 0)
    results["preprocess_rdkit_conformers_1proc_mol_per_s"] = _rate(
        len(subset), time.perf_counter() - start
    )

    with tempfile.TemporaryDirectory() as tmp:
        for runner in ("local", "beam"):
            for workers in (1, 2):
                out = os.path.join(tmp, f"{runner}{workers}")
                start = time.perf_counter()
                meta = build_shards(
                    "qm9", out, workers=workers, limit=args.qm9_limit, progress=False, runner=runner
                )
                seconds = time.perf_counter() - start
                results[f"build_shards_qm9_{runner}_{workers}workers_mol_per_s"] = _rate(
                    meta["num_written"], seconds
                )
        results["build_shards_qm9_molecules"] = meta["num_written"]
        results["bytes_per_molecule_qm9"] = round(meta["bytes_per_molecule"], 1)
        shard_dir = out  # What the reader benchmarks read.

        start = time.perf_counter()
        count = sum(1 for _ in iter_records(shard_dir))
        results["iter_records_mol_per_s"] = _rate(count, time.perf_counter() - start)

        from moleblend_jax.data.pipeline import make_batches

        start = time.perf_counter()
        batches = make_batches(shard_dir, 256, (16, 32), seed=0)
        next(batches)
        results["pipeline_first_batch_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        molecules = sum(int(next(batches)["mol_mask"].sum()) for _ in range(args.pipeline_batches))
        results["pipeline_batch256_mol_per_s"] = _rate(molecules, time.perf_counter() - start)

    import rdkit
    import tensorflow as tf

    results["machine"] = dict(
        platform=platform.platform(),
        processor=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        load_average=[round(x, 2) for x in os.getloadavg()],
        python=platform.python_version(),
        tensorflow=tf.__version__,
        rdkit=rdkit.__version__,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
