"""A fine-tuning workdir is one consistent run (issue 32): a rerun writes beside the committed
run and switches at its very end, a rerun on other data is refused, a second run is locked
out, and an SDF mixing 3D and 2D records is refused or split as the user says."""

import json
import os
import shutil

import numpy as np
import pytest
from script_testing import assert_one_line_errors
from test_own_data import _config, _write_fixture

from moleblend_jax.data import input_rows
from moleblend_jax.errors import UserError
from moleblend_jax.finetune import predictor, protocol, task_data, user_data
from moleblend_jax.finetune import workdir as workdir_lib
from moleblend_jax.train.lock import locked
from moleblend_jax.train.paths import as_path

NEW = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "ClCCl"]


def _records(smiles):
    return input_rows.featurize_rows(input_rows.smiles_items(smiles)).records


def _predict(workdir):
    return predictor.Predictor.load(workdir).predict(_records(NEW))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A committed run on 30 molecules (labels in logS) and the same file with labels x 100."""
    root = tmp_path_factory.mktemp("ftw")
    frame = _write_fixture(root / "mine.csv", num=30)
    frame.assign(logS=frame["logS"] * 100, esol=frame["esol"] * 100).to_csv(
        root / "x100.csv", index=False
    )
    protocol.run(_config(root / "mine.csv"), root / "ft")
    return root, _predict(root / "ft"), (root / "ft" / "results.json").read_text()


def _copy(root, tmp_path):
    shutil.copytree(root / "ft", tmp_path / "ft", symlinks=True)
    return tmp_path / "ft"


class Killed(BaseException):
    """Stands for kill -9: nothing after the raise point runs."""


def _kill_at(monkeypatch, where):
    def die(*args, **kwargs):
        if where == "during_checkpoint_write":
            os.makedirs(args[0], exist_ok=True)  # A half-written checkpoint directory.
        raise Killed(where)

    if where == "after_checkpoints":  # Every seed's params written, nothing else.
        monkeypatch.setattr(protocol, "summarize", die)
    else:
        monkeypatch.setattr(predictor, "save_params", die)


@pytest.mark.parametrize("where", ["after_checkpoints", "during_checkpoint_write"])
def test_a_killed_rerun_leaves_the_committed_run_whole(finished, tmp_path, monkeypatch, where):
    root, before, results = finished
    workdir = _copy(root, tmp_path)
    _kill_at(monkeypatch, where)
    with pytest.raises(Killed):
        protocol.run(_config(root / "x100.csv", overwrite=True), workdir)
    monkeypatch.undo()
    runs = sorted(os.listdir(workdir / "runs"))
    assert len(runs) == 2  # The committed run and the killed one's leftover.
    np.testing.assert_array_equal(_predict(workdir), before)  # Never the new params.
    assert (workdir / "results.json").read_text() == results

    protocol.run(_config(root / "x100.csv", overwrite=True), workdir)  # Finishes this time.
    after = _predict(workdir)
    assert np.nanmean(np.abs(after)) > 20 * np.nanmean(np.abs(before))  # Labels x 100.
    manifest = json.loads((workdir / "predictor.json").read_text())
    assert json.loads((workdir / "results.json").read_text())["run_id"] == manifest["run_id"]
    assert os.listdir(workdir / "runs") == [manifest["run_id"]]  # Both older runs deleted.


def test_prediction_refuses_a_checkpoint_of_another_run(finished, tmp_path):
    workdir = _copy(finished[0], tmp_path)
    (workdir / "checkpoints" / "seed_0" / workdir_lib.RUN_ID_FILE).write_text("someone-else\n")
    with pytest.raises(UserError, match="belongs to run someone-else.*mixes two runs"):
        predictor.Predictor.load(workdir)


def test_a_rerun_on_other_data_is_refused_without_overwrite(finished, tmp_path):
    root = finished[0]
    workdir = _copy(root, tmp_path)
    with pytest.raises(UserError, match=r"other data .*dataset_sha256: .*--config.overwrite=true"):
        protocol.run(_config(root / "x100.csv"), workdir)
    assert len(os.listdir(workdir / "runs")) == 1
    np.testing.assert_array_equal(_predict(workdir), finished[1])


def test_a_second_run_on_a_locked_workdir_is_refused(finished, tmp_path):
    root = finished[0]
    workdir = _copy(root, tmp_path)
    metrics = (workdir / "metrics.jsonl").read_text()
    with locked(as_path(workdir)):
        with pytest.raises(UserError, match=f"in use by another run \\(pid {os.getpid()}"):
            protocol.run(_config(root / "mine.csv"), workdir)
    assert (workdir / "metrics.jsonl").read_text() == metrics
    assert len(os.listdir(workdir / "runs")) == 1


def test_a_workdir_written_before_runs_loads_and_is_moved_on_rerun(finished, tmp_path):
    """The layout of earlier versions: real files at the top, no run ids."""
    root, before, _ = finished
    committed = workdir_lib.committed_dir(root / "ft")
    legacy = tmp_path / "ft"
    legacy.mkdir()
    for name in ("predictor.json", "results.json", "metrics.jsonl", "checkpoints"):
        copy = shutil.copytree if (committed / name).is_dir() else shutil.copy
        copy(committed / name, legacy / name)
    manifest = json.loads((legacy / "predictor.json").read_text())
    del manifest["run_id"]
    (legacy / "predictor.json").write_text(json.dumps(manifest))
    np.testing.assert_array_equal(_predict(legacy), before)

    protocol.run(_config(root / "mine.csv"), legacy)
    assert os.path.islink(legacy / "predictor.json") and os.path.islink(legacy / "checkpoints")
    assert len(os.listdir(legacy / "runs")) == 1  # runs/legacy deleted after the commit.
    np.testing.assert_allclose(_predict(legacy), before, rtol=1e-5)  # Same data, same seed.


def _write_sdf(path, coordinates):
    """One record per entry of `coordinates` ("3d" or "2d"), labelled by a property y."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    smiles = ["CCO", "c1ccccc1O", "CC(=O)O", "CCN", "ClCCl", "CCCO", "OCCO", "CC(C)O"]
    writer = Chem.SDWriter(str(path))
    for i, kind in enumerate(coordinates):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles[i % len(smiles)]))
        if kind == "3d":
            AllChem.EmbedMolecule(mol, randomSeed=i)
        else:
            AllChem.Compute2DCoords(mol)
        mol.SetProp("_Name", f"m{i}")
        mol.SetProp("y", f"{0.5 * i}")
        writer.write(mol)
    writer.close()


def _sdf_config(path, **overrides):
    config = _config(path, **overrides)
    config.dataset, config.id_column, config.split_column = "sdf", "", ""
    return config


@pytest.mark.parametrize("first", ["3d", "2d"])
def test_an_sdf_mixing_3d_and_2d_is_refused_with_the_counts(tmp_path, first):
    other = "2d" if first == "3d" else "3d"
    _write_sdf(tmp_path / "mixed.sdf", [first] * 10 + [other] * 5)
    config = _sdf_config(tmp_path / "mixed.sdf")
    counts = (10, 5) if first == "3d" else (5, 10)
    with pytest.raises(UserError, match=f"{counts[0]} records have 3D coordinates and {counts[1]}"):
        user_data.read_table(config)


def test_an_sdf_mixing_3d_and_2d_in_the_mode_named_skips_and_counts(tmp_path):
    _write_sdf(tmp_path / "mixed.sdf", ["3d"] * 10 + ["2d"] * 5)
    config = _sdf_config(tmp_path / "mixed.sdf", modality="3d")
    data = task_data.load(config, tmp_path / "w")
    assert data.spec.needs_3d and data.skipped == {"no_3d_coordinates": 5}
    assert data.ids == list(range(10)) and all(r["has_coords"] for r in data.records)
    config.modality = "2d"
    data = task_data.load(config, tmp_path / "w")
    assert not data.spec.needs_3d and data.skipped == {} and len(data.records) == 15


def test_script_mistakes_are_one_line_exit_2(finished, tmp_path):
    """predict, embed and build_shards (both runners): exit 2, one `error:` line with the path."""
    from test_own_data import _run

    root = finished[0]
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "mols.smi").write_text("CCO\n")
    (tmp_path / "out_dir").mkdir()
    workdir, mols = f"--workdir={root / 'ft'}", f"--input={tmp_path / 'mols.smi'}"
    out = f"--out={tmp_path / 'p.csv'}"
    shards = f"--output={tmp_path / 'shards'}"
    cases = {
        f"{tmp_path / 'empty.csv'}": ("predict.py", workdir, f"--input={tmp_path}/empty.csv", out),
        f"--out={tmp_path / 'out_dir'} is a directory": (
            "predict.py", workdir, mols, f"--out={tmp_path / 'out_dir'}"
        ),
        "--batch_size=-5": ("predict.py", workdir, mols, out, "--batch_size=-5"),
        "--batch_size=0": (
            "embed.py", f"--checkpoint={root / 'ft'}", mols, "--out=e.npz", "--batch_size=0"
        ),
        f"input file is empty: {tmp_path / 'empty.csv'}": (
            "../data_prep/build_shards.py", f"--input={tmp_path / 'empty.csv'}", shards
        ),
        f"input file not found: {tmp_path / 'nothing.smi'}": (
            "../data_prep/build_shards.py", f"--input={tmp_path / 'nothing.smi'}", shards,
            "--runner=beam"
        ),
    }  # fmt: skip
    procs = {text: _run(*args) for text, args in cases.items()}
    assert_one_line_errors(procs)
