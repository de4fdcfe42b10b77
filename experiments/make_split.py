"""Writes the train/valid/test split that fine-tuning would make, without fine-tuning.

Usage:
  python experiments/make_split.py --dataset=esol [--split=scaffold] [--seed=0] \
      [--dataset_path=CSV] [--max_molecules=M] [--max_atoms=N] --out=split_scaffold_seed0.json

The molecules are fine-tuning's (`finetune.baselines.load_data`: the same records, the same
molecules skipped) and the split is `finetune.task_data.make_split`'s for that seed, written in the
format `--config.split_file`, experiments/baseline_rf.py and experiments/linear_probe.py read.
A deterministic split (scaffold) is the one an earlier fine-tuning run saved in its workdir, so
runs whose workdir is gone can be compared on the same record ids again.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from absl import app, flags

from moleblend_jax.cli import dataset_flags
from moleblend_jax.errors import exit_on_user_error
from moleblend_jax.finetune import baselines, splits, task_data

dataset_flags.define()
_SPLIT = flags.DEFINE_enum("split", None, ["scaffold", "random"], "Default: the data set's.")
_SEED = flags.DEFINE_integer("seed", 0, "The fine-tuning seed whose split to write.")
_OUT = flags.DEFINE_string("out", None, "Split JSON to write.", required=True)


def make(
    name: str,
    path: str | None,
    split_kind: str | None,
    seed: int,
    *,
    workdir: str | Path,
    max_molecules: int = 0,
    max_atoms: int | None = None,
) -> dict[str, list[int]]:
    """Fine-tuning's split (record ids per part) of data set `name` for `seed`; the records
    built in `workdir`."""
    data, _ = baselines.load_data(
        name, path, workdir, max_molecules=max_molecules, max_atoms=max_atoms
    )
    return task_data.make_split(data, split_kind or data.spec.default_split, seed)


@exit_on_user_error
def main(argv: Sequence[str]) -> None:
    del argv
    with tempfile.TemporaryDirectory() as scratch:
        split = make(
            **dataset_flags.values(), split_kind=_SPLIT.value, seed=_SEED.value, workdir=scratch
        )
    Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
    splits.save_split(_OUT.value, split)
    sizes = ", ".join(f"{part} {len(ids)}" for part, ids in split.items())
    print(f"{_OUT.value}: {sizes}")


if __name__ == "__main__":
    app.run(main)
