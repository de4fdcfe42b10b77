"""Fine-tuning data: a config -> records, task names and skip counts, and splits over record ids.

The molecules go through the pretraining shard writer (`data.shards.build_shards`: parallel,
deterministic, records keyed by id), once, into WORKDIR/data/<dataset>; a later run with the
same data and settings reuses the shards. Record ids are the data set's rows as
`datasets.load_dataset` returns them (QM9: its index), so a split saved as ids names the same
molecules for every run and for the random-forest baseline (experiments/baseline_rf.py).
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
import numpy as np

from moleblend_jax.data import iter_records
from moleblend_jax.data.shards import build_shards
from moleblend_jax.data.sources import Source, table_source
from moleblend_jax.finetune import datasets, splits
from moleblend_jax.train.paths import as_path


@dataclasses.dataclass(frozen=True)
class TaskData:
    """One data set, featurised: records in source order, their task names and what was skipped
    (reason -> count, from the shard metadata)."""

    spec: datasets.DatasetSpec
    records: list[dict]
    task_names: tuple[str, ...]
    skipped: dict[str, int]

    @property
    def ids(self) -> list[int]:
        return [int(r["id"]) for r in self.records]

    @property
    def num_source_molecules(self) -> int:
        """Molecules the data set offered (written + skipped)."""
        return len(self.records) + sum(self.skipped.values())


def dataset_source(config: ml_collections.ConfigDict) -> Source | str:
    """What `build_shards` reads for `config.dataset`: "qm9" (its first `max_molecules`), or the
    data set's rows (`max_molecules` > 0: a fixed random subset, seed 0, since some files are
    sorted by label), keyed by row."""
    spec = datasets.get_spec(config.dataset)
    if spec.name == "qm9":
        return "qm9"
    smiles, labels, task_names = datasets.load_dataset(spec.name, config.dataset_path)
    rows = np.arange(len(smiles))
    if 0 < config.max_molecules < len(smiles):
        rows = np.sort(np.random.default_rng(0).permutation(len(smiles))[: config.max_molecules])
    where = os.path.abspath(config.dataset_path) if config.dataset_path else "bundled"
    return table_source(
        f"{spec.name} ({where})",
        ids=rows.tolist(),
        smiles=[smiles[i] for i in rows],
        labels=labels[rows],
        label_names=task_names,
    )


def load(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> TaskData:
    """Builds (or reuses) the shards of `config.dataset` under WORKDIR/data/<dataset> with
    `config.data.num_prep_workers` processes and reads them back.

    Molecules with more than `config.data.max_atoms` heavy atoms are skipped and counted. QM9
    keeps its DFT coordinates; other data sets get none unless their spec needs 3D (RDKit).
    """
    spec = datasets.get_spec(config.dataset)
    data_dir = as_path(workdir) / "data" / spec.name
    qm9 = spec.name == "qm9"
    metadata = build_shards(
        dataset_source(config),
        data_dir,
        workers=config.data.num_prep_workers,
        max_atoms=config.data.max_atoms,
        conformers=None if qm9 else ("rdkit" if spec.needs_3d else "none"),
        limit=(config.max_molecules or None) if qm9 else None,
        progress=False,
    )
    return TaskData(
        spec=spec,
        records=list(iter_records(data_dir)),
        task_names=tuple(metadata["label_names"]),
        skipped=dict(metadata["skipped"]),
    )


def make_split(data: TaskData, kind: str, seed: int) -> dict[str, list[int]]:
    """The train/valid/test record ids of `data` for one seed (SPEC 7): QM9 with more than
    `datasets.QM9_FIXED_SPLIT_MIN` molecules gets the fixed valid/test sizes."""
    big_qm9 = data.spec.name == "qm9" and len(data.records) > datasets.QM9_FIXED_SPLIT_MIN
    sizes = datasets.QM9_SPLIT_SIZES if big_qm9 else {}
    smiles = [str(r["smiles"]) for r in data.records]
    return splits.split_ids(kind, data.ids, smiles, seed=seed, **sizes)


def read_split(path: str | os.PathLike, data: TaskData) -> dict[str, list[int]]:
    """A saved split of record ids, checked against `data`; one-line errors name the file."""
    if not as_path(path).exists():
        raise FileNotFoundError(f"split file {path} does not exist.")
    split = {name: ids.tolist() for name, ids in splits.load_split(path).items()}
    try:
        splits.id_positions(split, data.ids)
    except ValueError as err:
        raise ValueError(f"split file {path} ({data.spec.name}): {err}") from None
    return split


def seed_split(
    data: TaskData,
    kind: str,
    seed: int,
    *,
    workdir: str | os.PathLike,
    split_file: str | None = None,
    save: bool = True,
) -> dict[str, list[int]]:
    """One seed's split: `split_file` read when given (the same for every seed; never written),
    else `make_split`'s, saved (with `save`) as WORKDIR/split_<kind>_seed<seed>.json."""
    if split_file:
        return read_split(split_file, data)
    split = make_split(data, kind, seed)
    if save:
        splits.save_split(as_path(workdir) / f"split_{kind}_seed{seed}.json", split)
    return split


def split_records(data: TaskData, split: dict[str, list[int]]) -> dict[str, list[dict]]:
    """Records of each part of a split of record ids, in the split's order."""
    positions = splits.id_positions(split, data.ids)
    return {name: [data.records[p] for p in index] for name, index in positions.items()}
