"""Fine-tuning on Uni-Mol's LMDB sets (finetune/unimol_data.py): the split is the files',
classification targets of -1 are missing labels, 3D takes the first conformer without its
hydrogens, and a tiny run goes end to end with --config.split=files."""

import json
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem

pytest.importorskip("lmdb")  # The lmdb extra (CI installs it).
from unimol_testing import SMILES, regression_set, unimol_record, write_unimol_set  # noqa: E402

from moleblend_jax.api import Predictor
from moleblend_jax.configs import finetune as finetune_configs
from moleblend_jax.errors import MissingFileError, UserError
from moleblend_jax.finetune import protocol, task_data, unimol_data, workdir

PARTS = ("train", "valid", "test")
SMALL_MODEL = dict(num_layers=2, hidden_dim=32, ffn_dim=32, num_heads=4, num_kernels=16)


def _config(directory, **overrides):
    config = finetune_configs.get_config("tiny")
    config.model.update(SMALL_MODEL)
    path = None if directory is None else str(directory)
    config.update(dict(dataset="unimol_lmdb", dataset_path=path, split="files"))
    config.data.buckets, config.data.max_atoms, config.data.num_prep_workers = (32,), 32, 1
    config.update(overrides)
    return config


def _classification_set(directory, sizes=(8, 4, 4)):
    """Two tasks, -1 = missing; each part has both classes of both tasks."""
    records = []
    for i in range(sum(sizes)):
        target = [i % 2, -1 if i % 4 == 3 else (i // 2) % 2]
        records.append(unimol_record(SMILES[i], target, seed=i))
    cut = np.cumsum(sizes)
    parts = {"train": records[: cut[0]], "valid": records[cut[0] : cut[1]]}
    return write_unimol_set(directory, {**parts, "test": records[cut[1] :]})


def test_classification_targets_of_minus_one_are_missing(tmp_path):
    table = unimol_data.read_table(_config(_classification_set(tmp_path / "tox")))
    assert table.task_names == ("target_0", "target_1")
    assert table.spec.task_type == "classification" and table.spec.metric == "roc_auc"
    assert table.spec.name == "unimol_lmdb" and table.spec.default_split == "files"
    assert np.isnan(table.labels[3, 1]) and table.labels[3, 0] == 1.0
    assert np.isnan(table.labels).sum() == 4  # Rows 3, 7, 11, 15 of task 1.
    assert table.row_splits == ["train"] * 8 + ["valid"] * 4 + ["test"] * 4


def test_a_directory_named_as_a_registered_set_keeps_its_name_and_metric(tmp_path):
    table = unimol_data.read_table(_config(regression_set(tmp_path / "lipo", sizes=(3, 1, 1))))
    assert table.spec.name == "lipophilicity" and table.spec.metric == "rmse"
    assert table.spec.task_type == "regression" and table.task_names == ("target",)


def test_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(MissingFileError, match="not a directory"):
        unimol_data.read_table(_config(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="needs --config.dataset_path=DIR"):
        unimol_data.read_table(_config(None))
    mixed = write_unimol_set(
        tmp_path / "mixed",
        {
            "train": [unimol_record("CCO", [1.0]), unimol_record("CCN", [1.0, 2.0])],
            "valid": [unimol_record("CCC", [1.0])],
            "test": [unimol_record("CCCl", [1.0])],
        },
    )
    with pytest.raises(UserError, match=r"targets of different lengths \(train.lmdb:0: 1, train"):
        unimol_data.read_table(_config(mixed))
    three = write_unimol_set(
        tmp_path / "three",
        {part: [unimol_record("CCO", [2.0]), unimol_record("CC", [0.0])] for part in PARTS},
    )
    with pytest.raises(UserError, match=r"must be 0, 1 or -1, found \[2.\]"):
        unimol_data.read_table(_config(three, task_type="classification"))
    with pytest.raises(UserError, match="config.split=files is the split of a data set given as"):
        protocol.validate_config(_config(three, dataset="esol"))


def test_the_split_is_the_files_and_3d_takes_the_first_conformer(tmp_path):
    directory = regression_set(tmp_path / "set", sizes=(10, 3, 3), num_conformers=2)
    config = _config(directory, modality="3d")
    data = task_data.load(config, tmp_path / "work")
    split = task_data.make_split(data, "files", seed=0)
    assert split == {"train": list(range(10)), "valid": [10, 11, 12], "test": [13, 14, 15]}
    table = unimol_data.read_table(config)
    for record in data.records:
        molecule = table.molecules[int(record["id"])]
        heavy = Chem.MolFromSmiles(molecule.smiles).GetNumAtoms()
        assert len(molecule.atoms) > heavy  # The LMDB record has its hydrogens ...
        assert record["coords"].shape == (heavy, 3) and record["has_coords"]  # ... not here.
        np.testing.assert_allclose(record["coords"], molecule.conformer[:heavy], atol=1e-6)
        assert record["name"] == molecule.name
        assert record["smiles"] == Chem.CanonSmiles(molecule.smiles)
    flat = task_data.load(_config(directory), tmp_path / "flat")
    assert not any(r["has_coords"] for r in flat.records)
    assert task_data.conformer_mode(data.spec) == "file"
    assert task_data.conformer_mode(flat.spec) == "none"


def test_a_tiny_fine_tuning_run_with_the_files_split(tmp_path):
    directory = regression_set(tmp_path / "set")
    config = _config(directory, epochs=2, warmup_epochs=0, num_seeds=1, batch_size=32)
    results = protocol.run(config, tmp_path / "run")
    assert results["split"] == "files" and results["dataset"] == "unimol_lmdb"
    assert results["num_molecules"] == 36 and results["skipped"] == {}
    assert np.isfinite(results["test_mean"]) and results["tasks"] == ["target"]
    saved = json.loads((tmp_path / "run" / "split_files_seed0.json").read_text())
    assert {k: sorted(v) for k, v in saved.items()} == {
        "train": list(range(24)), "valid": list(range(24, 30)), "test": list(range(30, 36)),
    }  # fmt: skip
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all("test" in json.loads(line) for line in lines)


def test_a_3d_run_fine_tunes_the_3d_encoder_on_the_files_conformers(tmp_path):
    directory = regression_set(tmp_path / "set", sizes=(16, 4, 4))
    config = _config(directory, epochs=1, warmup_epochs=0, num_seeds=1, batch_size=32)
    config.modality = "3d"
    results = protocol.run(config, tmp_path / "run")
    assert results["split"] == "files" and np.isfinite(results["test_mean"])
    manifest = json.loads((tmp_path / "run" / "predictor.json").read_text())
    assert manifest["use_3d"] and not manifest["use_2d"] and manifest["conformers"] == "file"
    # New molecules get RDKit conformers at prediction.
    predicted = Predictor.load(tmp_path / "run").predict(["CCO", "c1ccccc1O"])
    assert len(predicted) == 2 and np.isfinite(predicted["target"]).all()


def test_a_run_records_the_hash_of_the_three_files(tmp_path):
    directory = regression_set(tmp_path / "set", sizes=(3, 1, 1))
    first = workdir.dataset_sha256(directory)
    assert first == workdir.dataset_sha256(directory) and len(first) == 64
    write_unimol_set(directory, {"test": [unimol_record("CCCC", [9.0])]})
    assert workdir.dataset_sha256(directory) != first


def test_compare_calls_the_files_split_the_originals():
    from moleblend_jax.finetune.comparison import protocol_notes

    example = json.loads((Path(__file__).parent / "data" / "results_example.json").read_text())
    assert example["dataset"] == "bbbp" and example["split"] == "scaffold"
    notes = protocol_notes({**example, "split": "files"})
    assert "Uni-Mol's split files (the original's)" in notes
    assert not [n for n in notes if n.startswith("split ")]
    assert "split random (orig. scaffold)" in protocol_notes({**example, "split": "random"})
