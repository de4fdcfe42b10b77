"""Linear probe: ridge / logistic regression on frozen graph embeddings of an encoder.

  python experiments/linear_probe.py --dataset=esol --checkpoint=PRETRAIN_WORKDIR \
      --split_file=FINETUNE_DIR/split_scaffold_seed0.json --max_atoms=64 --out=probe.json
  python experiments/linear_probe.py --dataset=esol --config=configs/base.py:small \
      --seeds=0,1,2 --out=probe_random.json        # a random init of the same size, per seed

The encoder's last-layer graph token (`moleblend_jax.inference.Embedder`, 2D by default, as
fine-tuning on MoleculeNet) is the feature vector; it is standardised on the train split,
then a ridge regression (regression) or an L2 logistic regression (classification, one per
task) is fitted on the train split with its strength chosen on the valid split over a fixed
grid, and scored on test. Molecules and splits are fine-tuning's (`finetune.baselines`: the
same records, record ids and split file), so the probe, the network and the random forest
score the same molecules. Writes results.json's format (`"init": "linear_probe"`, the chosen
strengths per task in each seed entry). With --checkpoint the embeddings do not depend on the
seed, so one seed is enough for a scaffold split; without one, each seed is a new random init.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from moleblend_jax.cli.startup import preamble

if __name__ == "__main__":  # First thing: glibc reads malloc settings only at start-up.
    preamble(malloc_tunables=True)

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from moleblend_jax.cli import dataset_flags
from moleblend_jax.errors import UserError, exit_on_user_error
from moleblend_jax.finetune import baselines, metrics
from moleblend_jax.finetune.results import summarize

dataset_flags.define()
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "Pretraining workdir or its checkpoints dir; unset: a random init."
)
config_flags.DEFINE_config_file(
    "config", None, "configs/base.py[:variant]: the model sizes of a random init (or of a "
    "checkpoint without model_config.json)."
)  # fmt: skip
_STEP = flags.DEFINE_integer("step", None, "The checkpoint's step (default: its newest).")
_CONFORMERS = flags.DEFINE_enum(
    "conformers", "none", ["none", "rdkit"], "none: the 2D encoder; rdkit: the 3D one."
)
_SPLIT = flags.DEFINE_enum("split", None, ["scaffold", "random"], "Default: the data set's.")
_SPLIT_FILE = flags.DEFINE_string("split_file", None, "Read this split (record ids).")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Random-init (and random-split) seeds.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Shards and splits made; default: a temp dir.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Molecules per embedding batch.")
_OUT = flags.DEFINE_string("out", None, "results.json to write.", required=True)

RIDGE_ALPHAS = tuple(10.0**k for k in range(-2, 5))  # Ridge penalty grid (standardised features).
LOGISTIC_CS = tuple(10.0**k for k in range(-4, 2))  # Inverse L2 strength grid.


def standardise(features: np.ndarray, train: np.ndarray) -> np.ndarray:
    """[M, D] features scaled by the train rows' mean and std (constant columns left at 0)."""
    mean, std = features[train].mean(0), features[train].std(0)
    return (features - mean) / np.where(std > 0, std, 1.0)


def _one_task(task_type, metric, x, y, rows, grid) -> tuple[np.ndarray, float | None]:
    """One task: fit on labelled train rows for each strength in `grid`, keep the one with the
    best valid metric -> (predictions [M], chosen strength; None for a constant model)."""
    from sklearn.linear_model import LogisticRegression, Ridge

    train = rows["train"][~np.isnan(y[rows["train"]])]
    valid = rows["valid"][~np.isnan(y[rows["valid"]])]
    if task_type == "classification" and np.unique(y[train]).size < 2:
        return np.full(len(y), float(y[train][0]) if train.size else 0.5), None
    best = None
    for strength in grid:
        if task_type == "classification":
            model = LogisticRegression(C=strength, max_iter=5000)
            model.fit(x[train], y[train].astype(np.int64))
            preds = model.predict_proba(x)[:, list(model.classes_).index(1)]
        else:
            preds = Ridge(alpha=strength).fit(x[train], y[train]).predict(x)
        score = metrics.compute_metric(metric, y[valid, None], preds[valid, None])[0]
        if best is None or metrics.is_better(metric, score, best[0]):
            best = (score, preds, strength)
    return best[1], best[2]


def fit_predict_linear(
    task_type: str, metric: str, embeddings: np.ndarray, labels: np.ndarray, rows: dict
) -> tuple[np.ndarray, list[float | None]]:
    """[M, D] embeddings (NaN rows: not embedded), [M, T] labels, row positions of the split ->
    ([M, T] predictions, the chosen strength per task). Rows without an embedding are left out
    of fitting and predicted as the train labels' mean."""
    embedded = ~np.isnan(embeddings).any(axis=1)
    kept = {part: index[embedded[index]] for part, index in rows.items()}
    x = standardise(np.nan_to_num(embeddings), kept["train"])
    grid = LOGISTIC_CS if task_type == "classification" else RIDGE_ALPHAS
    preds = np.empty(labels.shape, np.float64)
    chosen = []
    for task in range(labels.shape[1]):
        y = labels[:, task]
        preds[:, task], strength = _one_task(task_type, metric, x, y, kept, grid)
        preds[~embedded, task] = np.nanmean(y[kept["train"]])
        chosen.append(strength)
    return preds, chosen


def run(
    name: str,
    path: str | None,
    split_kind: str | None,
    seeds: Sequence[int],
    *,
    workdir: str | Path,
    checkpoint: str | None = None,
    step: int | None = None,
    model_config=None,
    conformers: str = "none",
    max_molecules: int = 0,
    max_atoms: int | None = None,
    split_file: str | None = None,
    batch_size: int = 64,
) -> dict:
    """The results.json dict of the probe on one data set (see the module docstring)."""
    from moleblend_jax.inference import Embedder

    if checkpoint is None and model_config is None:
        raise UserError("a random-init probe needs --config=configs/base.py[:variant]")
    data, max_atoms = baselines.load_data(
        name, path, workdir, max_molecules=max_molecules, max_atoms=max_atoms
    )
    split_kind = split_kind or data.spec.default_split
    labels = baselines.labels_of(data)
    smiles = [str(r["smiles"]) for r in data.records]
    cache: dict[int | None, np.ndarray] = {}

    def embed(seed: int) -> np.ndarray:
        key = None if checkpoint else seed  # A checkpoint's embeddings do not depend on seed.
        if key not in cache:
            if checkpoint:
                embedder = Embedder.from_checkpoint(
                    checkpoint, conformers, model_config, batch_size, step
                )
            else:
                embedder = Embedder.from_random_init(model_config, seed, conformers, batch_size)
            cache[key] = embedder.embed(smiles)
        return cache[key]

    chosen = {}

    def probe(seed: int, rows: dict[str, np.ndarray]) -> np.ndarray:
        preds, chosen[seed] = fit_predict_linear(
            data.spec.task_type, data.spec.metric, embed(seed), labels, rows
        )
        return preds

    per_seed = baselines.score_seeds(
        data, split_kind, seeds, probe, workdir=workdir, split_file=split_file
    )
    for entry in per_seed:
        entry["strength_per_task"] = chosen[entry["seed"]]
        entry["not_embedded"] = int(np.isnan(embed(entry["seed"])).any(axis=1).sum())
    return summarize(
        data.spec,
        split_kind,
        init="linear_probe",
        init_checkpoint=checkpoint,
        seeds=per_seed,
        config={
            "model": "Ridge" if data.spec.task_type == "regression" else "LogisticRegression",
            "strength_grid": list(
                RIDGE_ALPHAS if data.spec.task_type == "regression" else LOGISTIC_CS
            ),
            "features": "graph token, last layer, standardised on train",
            "encoder": checkpoint or "random init",
            "checkpoint_step": step,
            "conformers": conformers,
            **baselines.protocol(data, max_molecules, max_atoms, split_file),
        },
        num_records=len(data.records),
        skipped=data.skipped,
    )


@exit_on_user_error
def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import logging

    from moleblend_jax.train import checkpoint

    checkpoint.quiet_orbax_info_logs()
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    config = flags.FLAGS.config
    with tempfile.TemporaryDirectory() as scratch:
        result = run(
            **dataset_flags.values(),
            split_kind=_SPLIT.value,
            seeds=[int(s) for s in _SEEDS.value],
            workdir=_WORKDIR.value or scratch,
            checkpoint=_CHECKPOINT.value,
            step=_STEP.value,
            model_config=config.model if config is not None else None,
            conformers=_CONFORMERS.value,
            split_file=_SPLIT_FILE.value,
            batch_size=_BATCH.value,
        )
    baselines.write_results(result, _OUT.value)


if __name__ == "__main__":
    app.run(main)
