"""A TFDS dataset builder over our shard directories (`tfds.builder("moleblend_records/qm9")`).

One on-disk format (benchmarks/formats.json): the builder writes today's shard directory with
the Beam shard writer (`build_shards` with runner="beam") into its TFDS data dir
DATA_DIR/moleblend_records/<config>/<SCHEMA_VERSION>.0.0/, next to TFDS's dataset_info.json and
features.json. metadata.json is both ours (`reader.load_metadata`: skip counts by reason,
shards, atom counts) and TFDS's `info.metadata`, so that directory is at the same time a TFDS
dataset and the `data_dir` of `pipeline.make_batches` / `iter_records` (training reads it there:
buckets, exact resume, per-process shards).

  import tensorflow_datasets as tfds
  from moleblend_jax.data import tfds_builder  # Registers the builder.

  builder = tfds.builder("moleblend_records/qm9", data_dir=DATA_DIR)
  builder.download_and_prepare()  # Beam DirectRunner; or download_config=tfds.download
  #   .DownloadConfig(beam_options=PipelineOptions([...])) for a cluster.
  examples = builder.as_dataset(split="train")  # One dict per molecule, features below.
  batches = make_batches(builder.data_dir, 256, seed=0)  # The training input.

Configs: `qm9` (bundled), `pcqm4mv2` (the user's pcqm4m-v2-train.sdf + data.csv.gz in the
manual dir) and `user_files(name, path, conformers=...)` for a .smi / .csv / .sdf.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from moleblend_jax.data import beam_shards, reader, serialize
from moleblend_jax.data.public_sets import BUNDLED_SOURCES
from moleblend_jax.data.shards import ShardOptions, build_shards
from moleblend_jax.data.sources import FileInput
from moleblend_jax.schema import (
    MAX_SUPPORTED_ATOMS,
    NUM_ATOM_FEATURES,
    NUM_BOND_FEATURES,
    SCHEMA_VERSION,
    SHARD_SUFFIX,
)

SPLIT = "train"  # One split: the shards hold the source in order; splits are by id.


@dataclasses.dataclass(eq=False)
class MoleblendConfig(tfds.core.BuilderConfig):
    """`build_shards`' arguments. input: `qm9`, a path, or a name in the manual dir."""

    input: str = "qm9"
    conformers: str | None = None  # file | rdkit | none; default: the source's.
    max_atoms: int = MAX_SUPPORTED_ATOMS
    num_shards: int = 16
    limit: int | None = None
    smiles_column: str | None = None
    label_columns: list[str] | None = None
    labels_csv: str | None = None
    seed: int = 0
    workers: int = 2  # DirectRunner processes when no Beam options are given.

    @classmethod
    def user_files(cls, name: str, path: str, **kwargs) -> MoleblendConfig:
        """A config for a user's .smi / .csv / .sdf file (kwargs: the fields above)."""
        return cls(
            name=name, input=os.path.abspath(path), description=f"User file {path}.", **kwargs
        )


def _features() -> tfds.features.FeaturesDict:
    """One molecule as stored (docs/data.md): N atoms, E bonds, T labels."""
    uint8 = np.uint8
    return tfds.features.FeaturesDict(
        {
            "id": tfds.features.Scalar(np.int64, doc="Molecule id (source key)."),
            "smiles": tfds.features.Text(),
            "name": tfds.features.Text(doc="Source name ('' = none)."),
            "atom_features": tfds.features.Tensor(shape=(None, NUM_ATOM_FEATURES), dtype=uint8),
            "bond_features": tfds.features.Tensor(shape=(None, NUM_BOND_FEATURES), dtype=uint8),
            "bond_atoms": tfds.features.Tensor(shape=(None, 2), dtype=uint8),
            "spd": tfds.features.Tensor(
                shape=(None, None), dtype=uint8, doc="Hops; 0 off the diagonal = unreachable."
            ),
            "via": tfds.features.Tensor(
                shape=(None, None), dtype=uint8, doc="Floyd-Warshall intermediate atom (paths)."
            ),
            "coords": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
            "has_coords": tfds.features.Scalar(np.int64),
            "labels": tfds.features.Tensor(shape=(None,), dtype=np.float32, doc="NaN = missing."),
        }
    )


def decode_example(serialized: tf.Tensor) -> dict:
    """One serialized record -> the `_features()` dict ([N, 9] atom_features, [N, N] spd, ...)."""
    spec = {k: tf.io.FixedLenFeature([], tf.int64) for k in serialize.INT_FEATURES}
    for key in serialize.BYTES_FEATURES:  # name and labels are optional.
        spec[key] = tf.io.FixedLenFeature([], tf.string, default_value="")
    f = tf.io.parse_single_example(serialized, spec)
    n, e = f["n_atoms"], f["n_bonds"]

    def array(key, dtype, *shape):
        return tf.reshape(tf.io.decode_raw(f[key], dtype), tf.stack(shape))

    return dict(
        id=f["id"],
        smiles=f["smiles"],
        name=f["name"],
        atom_features=array("atom_features", tf.uint8, n, NUM_ATOM_FEATURES),
        bond_features=array("bond_features", tf.uint8, e, NUM_BOND_FEATURES),
        bond_atoms=array("bond_atoms", tf.uint8, e, 2),
        spd=array("spd", tf.uint8, n, n),
        via=array("via", tf.uint8, n, n),
        coords=array("coords", tf.float32, n, 3),
        has_coords=f["has_coords"],
        labels=tf.io.decode_raw(f["labels"], tf.float32),
    )


class MoleblendRecords(tfds.core.DatasetBuilder):
    """moleblend-jax records, written as shard directories by the Beam shard writer."""

    VERSION = tfds.core.Version(f"{SCHEMA_VERSION}.0.0")  # A new shard schema: a new version.
    RELEASE_NOTES = {f"{SCHEMA_VERSION}.0.0": "Shard schema version 2 (docs/data.md)."}
    BUILDER_CONFIGS = [
        MoleblendConfig(name="qm9", input="qm9", description="QM9 (qm9pack), DFT coordinates."),
        MoleblendConfig(
            name="pcqm4mv2",
            input="pcqm4m-v2-train.sdf",
            description="PCQM4Mv2 train: SDF coordinates, HOMO-LUMO gap (eV).",
        ),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "pcqm4mv2: put pcqm4m-v2-train.sdf and data.csv.gz (from "
        "https://ogb.stanford.edu/docs/lsc/pcqm4mv2/) in the manual dir. user_files configs: "
        "a relative input path is looked up there."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="moleblend-jax molecule records (docs/data.md): graph, shortest "
            "paths, coordinates and labels of each molecule, keyed by its source id.",
            features=_features(),
            metadata=tfds.core.MetadataDict(),
            homepage="https://github.com/microsoft/MoleBLEND",
        )

    def _input(self, dl_manager) -> str:
        config = self.builder_config
        if config.input in BUNDLED_SOURCES or os.path.isabs(config.input):
            return config.input
        return os.fspath(dl_manager.manual_dir / config.input)

    def _download_and_prepare(self, dl_manager, download_config=None) -> None:
        """Runs the Beam shard writer into the data dir; metadata.json -> info.metadata."""
        config = self.builder_config
        beam_options = download_config.beam_options if download_config else None
        source = FileInput(
            self._input(dl_manager),
            smiles_column=config.smiles_column,
            label_columns=config.label_columns,
            labels_csv=config.labels_csv,
        )
        options = ShardOptions(
            num_shards=config.num_shards,
            max_atoms=config.max_atoms,
            conformers=config.conformers,
            limit=config.limit,
            seed=config.seed,
            progress=False,
            runner="beam",
            pipeline_options=beam_options or beam_shards.direct_options(config.workers),
        )
        metadata = build_shards(source, self.data_dir, options)
        self.info.metadata.update(metadata)  # TFDS saves it as the same metadata.json.
        # Our file names, so that TFDS lists the right files (reading them needs this module:
        # the records are ours, not TFDS-serialized examples).
        files = tfds.core.ShardedFileTemplate(
            data_dir=self.data_dir,
            template="shard-{SHARD_X_OF_Y}" + SHARD_SUFFIX,
            dataset_name=self.name,
            split=SPLIT,
        )
        split = tfds.core.SplitInfo(
            name=SPLIT,
            shard_lengths=[s["num_records"] for s in metadata["shards"]],
            num_bytes=metadata["total_bytes"],
            filename_template=files,
        )
        self.info.set_splits(tfds.core.SplitDict([split]))

    def _as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        """The molecules of the (only) split, in shard order, as `_features()` dicts."""
        del decoders, read_config
        if str(split) != SPLIT:
            raise ValueError(f"{self.name}: one split, {SPLIT!r} (got {split!r})")
        paths = reader.shard_paths(self.data_dir)
        files = tf.data.Dataset.from_tensor_slices(paths)
        if shuffle_files:
            files = files.shuffle(len(paths))
        records = files.interleave(tf.data.TFRecordDataset, cycle_length=len(paths))
        return records.map(decode_example, num_parallel_calls=tf.data.AUTOTUNE)
