"""The TFDS builder writes a shard directory that TFDS and our reader both open."""

import os

import numpy as np
import pytest

pytest.importorskip("apache_beam")  # The `beam` extra.

import tensorflow_datasets as tfds  # noqa: E402

from moleblend_jax.data import iter_records, load_metadata, tfds_builder  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data")
HOSTILE = os.path.join(DATA, "hostile.smi")
ONE_PROCESS = dict(workers=1)  # In-memory DirectRunner: the multi-process one is test_data_beam.


def _prepare(data_dir, config):
    builder = tfds.builder("moleblend_records", config=config, data_dir=str(data_dir))
    builder.download_and_prepare()
    return builder


def test_qm9_builder_examples_equal_records(tmp_path):
    config = tfds_builder.MoleblendConfig(
        name="qm9_200", input="qm9", limit=200, num_shards=3, **ONE_PROCESS
    )
    builder = _prepare(tmp_path, config)
    assert builder.version == f"{tfds_builder.SCHEMA_VERSION}.0.0"
    metadata = load_metadata(builder.data_dir)  # Our reader opens the TFDS data dir.
    assert builder.info.splits["train"].num_examples == metadata["num_written"] == 200
    records = {int(r["id"]): r for r in iter_records(builder.data_dir)}
    examples = list(tfds.as_numpy(builder.as_dataset(split="train")))
    assert [int(e["id"]) for e in examples] == list(records)  # Source order, ids kept.
    for example in examples:
        record = records[int(example["id"])]
        assert example["smiles"].decode() == record["smiles"]
        for key in ("atom_features", "bond_features", "bond_atoms", "coords", "labels"):
            np.testing.assert_array_equal(example[key], record[key], err_msg=key)
        spd = example["spd"].astype(np.int64)  # Stored hops; the record's 510 = unreachable.
        np.testing.assert_array_equal(np.where(record["spd"] == 510, 0, record["spd"]), spd)
    from moleblend_jax.data.pipeline import make_batches  # The training input, same dir.

    batches = make_batches(builder.data_dir, 64, (16,), seed=0, repeat=False)
    assert sum(int(b["mol_mask"].sum()) for b in batches) == 200
    # A second builder reads the prepared set: info and metadata come back from disk.
    again = tfds.builder("moleblend_records", config=config, data_dir=str(tmp_path))
    assert again.info.metadata["args"] == metadata["args"]
    assert (
        len(
            list(
                tfds.load(
                    "moleblend_records",
                    split="train",
                    builder_kwargs=dict(config=config),
                    data_dir=str(tmp_path),
                )
            )
        )
        == 200
    )


def test_user_files_config_keeps_skip_counts(tmp_path):
    config = tfds_builder.MoleblendConfig.user_files(
        "hostile", HOSTILE, conformers="none", max_atoms=32, num_shards=2, **ONE_PROCESS
    )
    builder = _prepare(tmp_path, config)
    assert builder.info.metadata["skipped"] == {
        "empty_line": 2,
        "invalid_smiles": 2,
        "kekulize_error": 1,
        "too_many_atoms": 1,
        "valence_error": 1,
    }
    names = {
        int(e["id"]): e["name"].decode() for e in tfds.as_numpy(builder.as_dataset(split="train"))
    }
    assert names[1] == "ethanol" and len(names) == 10


def test_pcqm4mv2_config_reads_the_manual_dir_with_given_beam_options(tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions

    download_config = tfds.download.DownloadConfig(
        manual_dir=os.path.join(DATA, "pcqm"),
        beam_options=PipelineOptions(["--runner=DirectRunner"]),
    )
    builder = tfds.builder("moleblend_records/pcqm4mv2", data_dir=str(tmp_path))
    builder.download_and_prepare(download_config=download_config)
    assert builder.info.metadata["skipped"] == {"sdf_parse_error": 1}
    assert builder.info.metadata["label_names"] == ["homolumogap"]
    assert builder.info.splits["train"].num_examples == 3
