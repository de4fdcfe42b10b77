"""Fine-tuning data: a config -> records, task names and skip counts, and splits over record ids.

The molecules go through the pretraining shard writer (`data.shards.build_shards`: parallel,
deterministic, records keyed by id), once, into WORKDIR/data/<dataset>; a later run with the
same data and settings reuses the shards. Record ids are the data set's rows as
`catalog.load_dataset` returns them (QM9: its index), so a split saved as ids names the same
molecules for every run and for the random-forest baseline (experiments/baseline_rf.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import ml_collections
import numpy as np

from moleblend_jax.data import iter_records
from moleblend_jax.data.shards import build_shards
from moleblend_jax.data.sources import Source, table_source
from moleblend_jax.errors import MissingFileError, NoMoleculesError, UserError
from moleblend_jax.finetune import catalog, splits, unimol_data, user_data
from moleblend_jax.train.paths import as_path


@dataclasses.dataclass(frozen=True)
class TaskData:
    """One data set, featurised: records in source order, their task names, what was skipped
    (reason -> count, from the shard metadata) and, for a user file with a split column, each
    record's split (record id -> "train" | "valid" | "test")."""

    spec: catalog.DatasetSpec
    records: list[dict]
    task_names: tuple[str, ...]
    skipped: dict[str, int]
    split_by_id: dict[int, str] | None = None

    @property
    def ids(self) -> list[int]:
        return [int(r["id"]) for r in self.records]

    @property
    def num_source_molecules(self) -> int:
        """Molecules the data set offered (written + skipped)."""
        return len(self.records) + sum(self.skipped.values())


def _subset(num: int, max_molecules: int) -> np.ndarray:
    """Rows kept: all, or (`max_molecules` > 0) a fixed random subset, seed 0, in file order
    (some files are sorted by label)."""
    if 0 < max_molecules < num:
        return np.sort(np.random.default_rng(0).permutation(num)[:max_molecules])
    return np.arange(num)


def dataset_source(
    config: ml_collections.ConfigDict,
) -> tuple[Source | str, catalog.DatasetSpec, dict[int, str] | None]:
    """What `build_shards` reads for `config.dataset`, its spec and each row's split from
    the split column by row id (user files with `config.split_column`, else None): "qm9" (its first
    `max_molecules`), or the data set's rows (`max_molecules` > 0: `_subset`), keyed by row."""
    if config.dataset == unimol_data.DATASET:
        lmdb_table = unimol_data.read_table(config)
        rows = _subset(len(lmdb_table.molecules), config.max_molecules)
        where = os.path.abspath(config.dataset_path)
        split_by_id = {int(i): lmdb_table.row_splits[i] for i in rows}
        return unimol_data.source(lmdb_table, rows, where), lmdb_table.spec, split_by_id
    if config.dataset in user_data.FORMATS:
        table = user_data.read_table(config)
        spec, smiles, labels, task_names = table.spec, table.smiles, table.labels, table.task_names
        where = os.path.abspath(config.dataset_path)
    else:
        spec = catalog.get_spec(config.dataset)
        if spec.name == "qm9":
            return "qm9", spec, None
        table = None
        smiles, labels, task_names = catalog.load_dataset(spec.name, config.dataset_path)
        where = os.path.abspath(config.dataset_path) if config.dataset_path else "bundled"
    rows = _subset(len(smiles), config.max_molecules)
    pick = lambda values: None if values is None else [values[i] for i in rows]  # noqa: E731
    source = table_source(
        f"{spec.name} ({where})",
        ids=rows.tolist(),
        smiles=pick(smiles),
        labels=labels[rows],
        label_names=task_names,
        names=pick(table.names) if table else None,
        mol_blocks=pick(table.mol_blocks) if table else None,
        skip_reasons=pick(table.skip_reasons) if table else None,
    )
    split_by_id = None
    if table is not None and table.row_splits is not None:
        split_by_id = {int(i): table.row_splits[i] for i in rows}
    return source, spec, split_by_id


def conformer_mode(spec: catalog.DatasetSpec) -> str | None:
    """`build_shards`' conformers for a data set: the source's (QM9 DFT, a user SDF's, a
    Uni-Mol record's), RDKit for other 3D sets, none for 2D."""
    if spec.name == "qm9":
        return None  # The source's default: its DFT coordinates.
    if spec.name == "sdf" or spec.coordinates_in_file:
        return "file" if spec.needs_3d else "none"
    return "rdkit" if spec.needs_3d else "none"


def load(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
) -> TaskData:
    """Builds (or reuses) the shards of `config.dataset` under WORKDIR/data/<dataset> (or
    DATA_ROOT/<dataset>) with `config.data.num_prep_workers` processes and reads them back.

    Molecules with more than `config.data.max_atoms` heavy atoms are skipped and counted. QM9
    keeps its DFT coordinates and a user SDF with 3D coordinates its own; other data sets get
    none unless their spec needs 3D (RDKit). User files show a progress bar.
    """
    source, spec, split_by_id = dataset_source(config)
    data_dir = as_path(data_root or as_path(workdir) / "data") / spec.name
    qm9 = spec.name == "qm9"
    try:
        metadata = build_shards(
            source,
            data_dir,
            workers=config.data.num_prep_workers,
            max_atoms=config.data.max_atoms,
            conformers=conformer_mode(spec),
            limit=(config.max_molecules or None) if qm9 else None,
            progress=config.dataset in (*user_data.FORMATS, unimol_data.DATASET),
        )
    except NoMoleculesError as err:
        raise NoMoleculesError(f"no valid molecules in {spec.name} data: {err}") from None
    records = list(iter_records(data_dir))
    return TaskData(
        spec=spec,
        records=records,
        task_names=tuple(metadata["label_names"]),
        skipped=dict(metadata["skipped"]),
        split_by_id=None
        if split_by_id is None
        else {int(r["id"]): split_by_id[int(r["id"])] for r in records},
    )


def make_split(data: TaskData, kind: str, seed: int) -> dict[str, list[int]]:
    """The train/valid/test record ids of `data` for one seed (SPEC 7): QM9 with more than
    `catalog.QM9_FIXED_SPLIT_MIN` molecules gets the fixed valid/test sizes; "column" is the
    user file's split column and "files" a Uni-Mol directory's files (the same for every
    seed)."""
    smiles = [str(r["smiles"]) for r in data.records]
    if kind == unimol_data.SPLIT:
        if data.split_by_id is None:
            raise UserError(f"config.split=files needs --config.dataset={unimol_data.DATASET}")
        return {
            part: [i for i in data.ids if data.split_by_id[i] == part]
            for part in ("train", "valid", "test")
        }
    if kind == "column":
        if data.split_by_id is None:
            raise UserError("config.split=column needs --config.split_column=COLUMN (a user file)")
        return splits.column_split(data.ids, [data.split_by_id[i] for i in data.ids], smiles)
    big_qm9 = data.spec.name == "qm9" and len(data.records) > catalog.QM9_FIXED_SPLIT_MIN
    sizes = catalog.QM9_SPLIT_SIZES if big_qm9 else {}
    return splits.split_ids(kind, data.ids, smiles, seed=seed, **sizes)


def read_split(path: str | os.PathLike, data: TaskData) -> dict[str, list[int]]:
    """A saved split of record ids, checked against `data`; one-line errors name the file."""
    if not as_path(path).exists():
        raise MissingFileError(f"split file {path} does not exist.")
    try:
        split = {name: ids.tolist() for name, ids in splits.load_split(path).items()}
        splits.id_positions(split, data.ids)
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"split file {path} ({data.spec.name}): {err}") from None
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


_SPLIT_ADVICE = (
    "use --config.split=random, a --config.split_column with train, valid and test rows, or "
    "more molecules"
)


def check_split_records(
    data: TaskData, records_by_split: dict[str, list[dict]], kind: str, seed: int
) -> None:
    """Refuses, before training, a split whose metrics would be NaN: an empty part, or (own
    files) a task without labels in a part or, for classification, with one class in it.
    MoleculeNet sets keep such tasks out of the mean, as the literature does, logged."""
    sizes = {name: len(records) for name, records in records_by_split.items()}
    empty = [name for name, size in sizes.items() if size == 0]
    where = f"{data.spec.name}: seed {seed}'s {kind} split"
    if empty:
        raise UserError(
            f"{where} has an empty {' and '.join(empty)} part ({json.dumps(sizes)} of "
            f"{len(data.records)} molecules); {_SPLIT_ADVICE}"
        )
    own_file = data.spec.name in user_data.FORMATS
    classification = data.spec.task_type == "classification"
    for name, records in records_by_split.items():
        labels = np.stack([r["labels"] for r in records]).reshape(len(records), -1)
        for t, task in enumerate(data.task_names):
            present = labels[:, t][~np.isnan(labels[:, t])]
            if present.size == 0:
                problem = "no labels"
            elif classification and np.unique(present).size < 2:
                problem = f"only class {present[0]:g}"
            else:
                continue
            message = (
                f"{where}: task {task!r} has {problem} in its {name} part ({sizes[name]} molecules)"
            )
            if own_file:
                raise UserError(f"{message}; its metric would be NaN: {_SPLIT_ADVICE}")
            logging.warning("%s: left out of that part's mean metric.", message)
