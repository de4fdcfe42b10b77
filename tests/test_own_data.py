"""Your own data (issue 13): fine-tune on a CSV / SDF, predict new molecules, embed them, and
one-line errors (exit status 2) for the user's mistakes.

One tiny fine-tuning run (one seed, one epoch, 40 molecules) is shared by the module."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from script_testing import assert_one_line_errors
from test_finetune_protocol import _load_finetune_config
from train_testing import REPO

from moleblend_jax.configs import finetune as finetune_configs
from moleblend_jax.errors import UserError
from moleblend_jax.finetune import protocol, splits, task_data, user_data
from moleblend_jax.inference import Embedder

ESOL = REPO / "moleblend_jax" / "sample_data" / "esol.csv"
BAD_ROW = 5  # Unparseable SMILES in the fixture.


def _write_fixture(path, num=40):
    """Two tasks with missing labels, an id column, a train/valid/test column, one bad row."""
    esol = pd.read_csv(ESOL).iloc[:num]
    frame = pd.DataFrame(
        {
            "name": [f"mol{i}" for i in range(num)],
            "smiles": esol["smiles"],
            "logS": esol["measured log solubility in mols per litre"],
            "esol": esol["ESOL predicted log solubility in mols per litre"],
            "split": np.array(["train", "train", "train", "valid", "test"])[np.arange(num) % 5],
        }
    )
    frame.loc[[2, 9, 14], "esol"] = np.nan
    frame.loc[7, "logS"] = np.nan
    frame.loc[BAD_ROW, "smiles"] = "C1CC(("
    frame.to_csv(path, index=False)
    return frame


def _config(path, **overrides):
    config = _load_finetune_config(
        dataset="csv",
        dataset_path=str(path),
        id_column="name",
        split_column="split",
        epochs=1,
        warmup_epochs=0,
        num_seeds=1,
        **overrides,
    )
    config.batch_size = 32
    config.data.buckets = (32,)
    config.data.max_atoms = 32
    config.data.num_prep_workers = 1
    return config


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    frame = _write_fixture(root / "mine.csv")
    (root / "ft").mkdir()
    (root / "ft" / "metrics.jsonl").write_text('{"step": 1, "stale": 1}\n')  # A run before.
    results = protocol.run(_config(root / "mine.csv"), root / "ft")
    return root, frame, results


def _run(script, *flags, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(REPO / "experiments" / script), *flags],
        cwd=cwd or REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_finetune_saves_what_prediction_needs(finetuned):
    root, _, results = finetuned
    workdir = root / "ft"
    manifest = json.loads((workdir / "predictor.json").read_text())
    assert manifest["task_names"] == ["logS", "esol"] == results["tasks"]
    assert manifest["task_type"] == "regression" and results["metric"] == "rmse"
    assert manifest["use_2d"] and not manifest["use_3d"]
    seed = manifest["seeds"][0]
    assert (workdir / seed["checkpoint"] / str(seed["best_epoch"])).is_dir()
    assert len(seed["label_mean"]) == len(seed["label_std"]) == 2
    assert results["skipped"] == {"invalid_smiles": 1}


def test_a_rerun_replaces_the_metrics_of_the_run_before(finetuned):
    rows = [json.loads(line) for line in (finetuned[0] / "ft" / "metrics.jsonl").open()]
    assert [(r["seed"], r["step"]) for r in rows] == [(0, 1)]  # One seed, one epoch.


def test_split_column_is_honoured_exactly(finetuned):
    root, frame, results = finetuned
    assert results["split"] == "column"
    saved = splits.load_split(root / "ft" / "split_column_seed0.json")
    for part in ("train", "valid", "test"):
        want = [i for i in np.flatnonzero(frame["split"] == part) if i != BAD_ROW]
        assert saved[part].tolist() == want, part


def test_column_split_carves_valid_from_train_by_scaffold():
    smiles = pd.read_csv(ESOL)["smiles"].iloc[:50].tolist()
    row_splits = ["test" if i % 4 == 0 else "train" for i in range(50)]
    ids = list(range(100, 150))
    split = splits.column_split(ids, row_splits, smiles)
    assert split["test"] == [100 + i for i in range(50) if row_splits[i] == "test"]
    train = {100 + i for i in range(50) if row_splits[i] == "train"}
    assert set(split["train"]) | set(split["valid"]) == train
    assert split["valid"] and not set(split["train"]) & set(split["valid"])
    scaffold = {splits.murcko_scaffold(smiles[i - 100]) for i in split["valid"]}
    assert not scaffold & {splits.murcko_scaffold(smiles[i - 100]) for i in split["train"]}


def test_predict_keeps_every_row_in_place(finetuned):
    root, _, _ = finetuned
    new = pd.DataFrame(
        {"smiles": ["CCO", "not a molecule", "", "c1ccccc1O", "OCC"], "name": list("abcde")}
    )
    new.to_csv(root / "new.csv", index=False)
    out = root / "pred.csv"
    workdir, given = f"--workdir={root / 'ft'}", f"--input={root / 'new.csv'}"
    proc = _run("predict.py", workdir, given, f"--out={out}", "--workers=1")
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-2000:]
    pred = pd.read_csv(out, keep_default_na=False)
    assert pred["id"].tolist() == list("abcde")  # The training run's id column.
    assert list(pred.columns) == [
        "id", "smiles", "logS", "logS_std", "logS_seed0", "esol", "esol_std", "esol_seed0",
        "error",
    ]  # fmt: skip
    errors = pred["error"].tolist()
    assert errors[0] == errors[3] == errors[4] == ""
    assert errors[1].startswith("invalid_smiles") and errors[2].startswith("empty_smiles")
    assert pred.loc[1, "logS"] == "" and float(pred.loc[0, "logS"]) == float(pred.loc[4, "logS"])


def test_embeddings_ignore_spelling_and_batch_position(finetuned):
    root, _, _ = finetuned
    embedder = Embedder.from_checkpoint(root / "ft", batch_size=8)
    alone = embedder.embed(["OCC"])
    others = ["c1ccccc1", "CC(=O)Nc1ccc(O)cc1", "CCO", "ClCCl", "C1CC((", "CCCCCCCC"]
    batch = embedder.embed(others)
    assert alone.shape == (1, 32) and np.isnan(batch[4]).all()
    np.testing.assert_allclose(batch[2], alone[0], atol=1e-6, rtol=0)
    result = embedder.embed(["CCO", "OCC"], atoms=True)
    np.testing.assert_array_equal(result.graph[0], result.graph[1])
    assert result.atoms[0].shape == (3, 32) and result.valid.all()


def test_embed_from_a_pretraining_checkpoint(tmp_path):
    """A pretraining checkpoints dir with model_config.json beside it; the CLI's npz; the same
    checkpoint without it and a config of another size: one line, exit 2."""
    import dataclasses

    from train_testing import random_params, small_config

    from moleblend_jax import model as model_lib
    from moleblend_jax.train import checkpoint

    config = small_config()
    params = random_params(config)
    for name, with_config in (("pre", True), ("bare", False)):
        ckpt = checkpoint.Checkpointer(tmp_path / name / "checkpoints", save_every=1, keep=1)
        ckpt.save(3, {"params": params}, force=True)
        ckpt.close()
        if with_config:
            sizes = dataclasses.asdict(model_lib.ModelConfig.coerce(config.model))
            (tmp_path / name / "model_config.json").write_text(json.dumps(sizes))
    (tmp_path / "mols.smi").write_text("CCO ethanol\nC1CC((  broken\nc1ccccc1 benzene\n")
    out = tmp_path / "emb.npz"
    mols = f"--input={tmp_path / 'mols.smi'}"
    ok = _run("embed.py", f"--checkpoint={tmp_path / 'pre'}", mols, f"--out={out}", "--atoms")
    bare = f"--checkpoint={tmp_path / 'bare' / 'checkpoints'}"
    wrong = _run("embed.py", bare, "--config=configs/base.py:tiny", mols, "--out=x.npz")
    _, stderr = ok.communicate(timeout=300)
    assert ok.returncode == 0, stderr[-2000:]
    saved = np.load(out)
    assert saved["ids"].tolist() == ["ethanol", "broken", "benzene"]
    assert saved["valid"].tolist() == [True, False, True]
    assert saved["errors"][1].startswith("invalid_smiles")
    assert saved["embeddings"].shape == (3, 32) and np.isnan(saved["embeddings"][1]).all()
    assert saved["atom_offsets"].tolist() == [0, 3, 3, 9]
    _, stderr = wrong.communicate(timeout=300)
    assert wrong.returncode == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "another model size" in stderr


def test_user_mistakes_are_one_line_exit_2(tmp_path):
    _write_fixture(tmp_path / "mine.csv", num=20)
    (tmp_path / "text.csv").write_text("smiles,y\nCCO,1.5\nCCC,high\nCCCC,2\nCO,n/a\n")
    (tmp_path / "junk.csv").write_text("smiles,y\n" + "C1CC((,1\nxyz,2\n" * 3)
    common = ["--config=configs/finetune.py:tiny"]
    data = f"--config.dataset_path={tmp_path / 'mine.csv'}"
    cases = {
        "unknown data set 'mydata'; known: b3db": ["--config.dataset=mydata", data],
        "label columns ['pIC50'] not found; the file's columns are ['name', 'smiles'": [
            "--config.dataset=csv",
            data,
            "--config.label_columns=pIC50",
        ],
        "'y' has 2 non-numeric cells (row 2: 'high', row 4: 'n/a')": [
            "--config.dataset=csv",
            f"--config.dataset_path={tmp_path / 'text.csv'}",
            "--config.label_columns=y",
        ],
        "no valid molecules": [
            "--config.dataset=csv",
            f"--config.dataset_path={tmp_path / 'junk.csv'}",
        ],
    }
    procs = {  # One workdir each: they run at once, and a workdir admits one run.
        text: _run("finetune.py", *common, f"--workdir={tmp_path / f'w{i}'}", *flags)
        for i, (text, flags) in enumerate(cases.items())
    }
    assert_one_line_errors(procs)


def test_sdf_labels_from_properties_and_3d_from_the_file(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    writer = Chem.SDWriter(str(tmp_path / "mols.sdf"))
    for i in range(8):
        mol = Chem.AddHs(Chem.MolFromSmiles(["CCO", "c1ccccc1O", "CC(=O)O", "CCN", "ClCCl"][i % 5]))
        AllChem.EmbedMolecule(mol, randomSeed=i)
        mol.SetProp("_Name", f"m{i}")
        mol.SetProp("active", str(i % 2))
        if i != 3:
            mol.SetProp("energy", f"{-1.5 * i}")
        writer.write(mol)
    writer.close()
    config = finetune_configs.get_config("tiny")
    config.dataset, config.dataset_path = "sdf", str(tmp_path / "mols.sdf")
    config.label_columns = "active"
    table = user_data.read_table(config)
    assert table.spec.task_type == "classification" and table.spec.needs_3d  # Inferred, 3D.
    assert table.names == [f"m{i}" for i in range(8)]
    config.label_columns, config.task_type = "energy", "regression"
    data = task_data.load(config, tmp_path / "w")
    assert np.isnan(data.records[3]["labels"][0]) and data.records[2]["labels"][0] == -3.0
    assert all(r["has_coords"] for r in data.records) and data.spec.metric == "rmse"
    config.task_type = "classification"
    with pytest.raises(UserError, match="needs 0/1 labels"):
        user_data.read_table(config)


def test_baseline_rf_uses_the_same_split(tmp_path, finetuned, experiment_script):
    root, frame, _ = finetuned
    baseline_rf = experiment_script("baseline_rf")

    settings = dict(n_estimators=5, n_jobs=1, workdir=tmp_path, max_atoms=32)
    given = dict(id_column="name", split_column="split")
    result = baseline_rf.run("csv", str(root / "mine.csv"), None, [0], **settings, **given)
    assert result["split"] == "column" and result["metric"] == "rmse"
    made = splits.load_split(tmp_path / "split_column_seed0.json")
    finetuned_split = splits.load_split(root / "ft" / "split_column_seed0.json")
    for part in ("train", "valid", "test"):
        np.testing.assert_array_equal(made[part], finetuned_split[part])


def test_an_auto_detected_column_that_is_not_numeric_is_logged(tmp_path, caplog):
    rows = "CCO,1.5,ok\nCCC,2.5,abc\nCO,,\nCCCO,1,\nCCCCO,2,\nCCN,3,\n"
    (tmp_path / "mols.csv").write_text("smiles,y,assay\n" + rows)
    config = finetune_configs.get_config("tiny")
    config.dataset, config.dataset_path = "csv", str(tmp_path / "mols.csv")
    with caplog.at_level("WARNING"):
        table = user_data.read_table(config)
    assert table.task_names == ("y",)
    assert "column 'assay' is not a label column: 2 non-numeric cells (row 1: 'ok'" in caplog.text
