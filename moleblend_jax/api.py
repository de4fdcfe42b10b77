"""The Python API for notebooks: fine-tune, predict and embed without absl flags.

    from moleblend_jax import api

    results, workdir = api.finetune(
        workdir="ft", dataset_path="mine.csv", variant="tiny", label_columns="logS",
        model={"num_layers": 2},  # nested sections take a dict
    )
    table = api.Predictor.load(workdir).predict(["CCO", "c1ccccc1O"])  # a pandas DataFrame
    graph = api.Embedder.from_checkpoint("pretrain/checkpoints").embed(["CCO"])  # [M, D]

The same library calls as `moleblend finetune` / `moleblend predict` / `moleblend embed`
(moleblend_jax/cli/), the same workdir and the same one-line `UserError`s, raised here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from moleblend_jax.inference import Embedder

__all__ = ["Embedder", "Predictor", "finetune", "finetune_config"]


def finetune_config(variant: str = "", **overrides):
    """configs/finetune.py's config (variant "", "tiny" or "small") with `overrides` set, as
    `--config.KEY=VALUE` would; a dict value updates that section (`model={"num_layers": 2}`).
    UserError for a key the config does not have."""
    from moleblend_jax.configs import finetune as finetune_configs
    from moleblend_jax.errors import UserError

    config = finetune_configs.get_config(variant or None)
    for key, value in overrides.items():
        if key not in config:
            raise UserError(f"{key}: not a fine-tuning setting (see configs/finetune.py)")
        if isinstance(value, dict):
            for name, item in value.items():
                if name not in config[key]:
                    raise UserError(f"{key}.{name}: not a fine-tuning setting")
                config[key][name] = item
        else:
            config[key] = value
    return config


def finetune(
    workdir: str | os.PathLike,
    dataset_path: str | os.PathLike | None = None,
    *,
    dataset: str | None = None,
    variant: str = "",
    config=None,
    **overrides,
) -> tuple[dict, Path]:
    """Fine-tunes as `moleblend finetune` does -> (the results dict of results.json, workdir).

    `dataset_path` alone is your CSV (an .sdf: dataset "sdf"); `dataset` names a registered
    data set instead. `config` (a ConfigDict) replaces configs/finetune.py:`variant`;
    `overrides` are its keys (`finetune_config`)."""
    from moleblend_jax.finetune import protocol

    if dataset is None:
        is_sdf = str(dataset_path or "").lower().endswith((".sdf", ".sdf.gz"))
        dataset = ("sdf" if is_sdf else "csv") if dataset_path is not None else "esol"
    settings = {"dataset": dataset, **overrides}
    if dataset_path is not None:
        settings["dataset_path"] = str(dataset_path)
    if config is None:
        config = finetune_config(variant, **settings)
    else:
        config = config.copy_and_resolve_references()
        for key, value in settings.items():
            config[key] = value
    results = protocol.run(config, workdir)
    return results, Path(workdir)


class Predictor:
    """A fine-tuning workdir's seeds: `Predictor.load(workdir).predict(smiles)` -> a DataFrame
    with the columns of `moleblend predict`'s CSV (finetune.predictor.prediction_table)."""

    def __init__(self, seeds):
        self.seeds = seeds  # finetune.predictor.Predictor

    @classmethod
    def load(cls, workdir: str | os.PathLike) -> Predictor:
        from moleblend_jax.finetune import predictor

        return cls(predictor.Predictor.load(workdir))

    @property
    def task_names(self) -> list[str]:
        return self.seeds.task_names

    def predict(self, smiles: Sequence[str], batch_size: int | None = None, workers: int = 1):
        """SMILES [M] -> a DataFrame of M rows in order (ids 0..M-1; an `error` and empty
        predictions where a SMILES cannot be featurised)."""
        from moleblend_jax.data import input_rows

        if isinstance(smiles, str):
            smiles = [smiles]
        rows = self.seeds.featurize(input_rows.smiles_items(smiles), workers=workers)
        rows.require_any_valid("the SMILES given")
        return self.seeds.predict_rows(rows, batch_size)
