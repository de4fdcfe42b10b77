"""Extra molecule features (`--config.extra_features=morgan_counts,rdkit_2d`): the descriptors,
their scaling fitted on the train split only, saved in predictor.json and reapplied at
prediction (the same predictions as the in-training evaluation), and the test metrics beside
the primary one in results.json."""

import dataclasses
import json

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import Descriptors, rdFingerprintGenerator
from test_own_data import _config, _write_fixture

from moleblend_jax import api
from moleblend_jax.chem import descriptors
from moleblend_jax.errors import UserError
from moleblend_jax.finetune import extra_features, metrics, predictor, protocol, task_data

KINDS = "morgan_counts,rdkit_2d"


def test_parse_and_feature_size():
    assert extra_features.parse("") == ()
    assert extra_features.parse("rdkit_2d, morgan_counts") == ("morgan_counts", "rdkit_2d")
    for bad in ("morgan", "rdkit_2d,rdkit_2d"):
        with pytest.raises(UserError, match="give one or both of morgan_counts,rdkit_2d"):
            extra_features.parse(bad)
    assert extra_features.feature_size(("morgan_counts",)) == 2048
    assert extra_features.feature_size(("rdkit_2d",)) == len(Descriptors._descList) > 200


def test_descriptors_are_rdkits():
    mols = [Chem.MolFromSmiles(s) for s in ("CCO", "c1ccccc1O")]
    counts = descriptors.morgan_counts(mols)
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    np.testing.assert_array_equal(counts[1], generator.GetCountFingerprintAsNumPy(mols[1]))
    assert counts.dtype == np.uint8 and counts[0].sum() > 0
    values = descriptors.rdkit_2d(mols)
    names = descriptors.rdkit_2d_names()
    assert values.shape == (2, len(names))
    assert values[0, names.index("MolWt")] == pytest.approx(Descriptors.MolWt(mols[0]))
    assert values[1, names.index("NumAromaticRings")] == 1


def test_scaling_is_fitted_on_the_train_molecules_only():
    names = descriptors.rdkit_2d_names()
    rdkit = np.full((4, len(names)), 2.0)
    rdkit[:, 0] = [1.0, 3.0, 1000.0, np.nan]  # The test molecule (id 12) is an outlier.
    rdkit[1, 1] = np.inf  # Non-finite: left out of the fit, 0 after scaling.
    morgan = np.arange(4 * 2048).reshape(4, 2048).astype(np.uint8)
    raw = extra_features.RawFeatures(np.array([10, 11, 12, 13]), morgan, rdkit)
    scaling = extra_features.FeatureScaling.fit(("rdkit_2d",), raw.subset([10, 11]))
    squashed = np.log1p(np.array([1.0, 3.0]))
    assert scaling.mean[0] == pytest.approx(squashed.mean())
    assert scaling.std[0] == pytest.approx(squashed.std())
    assert scaling.std[2] == 1.0  # Constant on train: std 1, not 0.
    features = extra_features.FeatureScaling.from_json(scaling.to_json()).apply(
        raw, np.array([1, 2, 3])
    )
    assert features.shape == (3, len(names)) and features.dtype == np.float32
    assert features[0, 1] == 0.0 and features[2, 0] == 0.0  # inf, NaN -> the train mean.
    assert features[1, 0] == extra_features.CLIP  # An outlier is clipped.
    both = extra_features.FeatureScaling.fit(("morgan_counts", "rdkit_2d"), raw)
    table = extra_features.FeatureTable(raw, both)
    batch = table.add_to({"id": np.array([13, -1, 10])})
    np.testing.assert_array_equal(batch["extra_features"][0, :2048], morgan[3])
    assert not batch["extra_features"][1].any()  # A filler row.
    np.testing.assert_array_equal(batch["extra_features"][2, :2048], morgan[0])


def test_saved_scaling_needs_the_same_descriptor_list():
    saved = extra_features.FeatureScaling(("rdkit_2d",), ("MolWt",), (0.0,), (1.0,)).to_json()
    with pytest.raises(UserError, match="RDKit 2D descriptors"):
        extra_features.FeatureScaling.from_json(saved)


@pytest.fixture(scope="module")
def with_features(tmp_path_factory):
    root = tmp_path_factory.mktemp("features")
    _write_fixture(root / "mine.csv")
    config = _config(root / "mine.csv", extra_features=KINDS)
    results = protocol.run(config, root / "ft")
    return root, config, results


def test_descriptors_are_saved_and_reapplied_at_predict(with_features):
    root, config, results = with_features
    manifest, _ = predictor.read_manifest(root / "ft")
    assert manifest["extra_features"] == ["morgan_counts", "rdkit_2d"]
    data = task_data.load(config, root / "ft")  # The run's shards, read back.
    by_part = {
        part: [r for r in data.records if data.split_by_id[int(r["id"])] == part]
        for part in ("train", "test")
    }
    # The scaling is the train split's: fitted again here from its molecules only.
    kinds = ("morgan_counts", "rdkit_2d")
    train_raw = extra_features.raw_features(by_part["train"], kinds)
    fitted = extra_features.FeatureScaling.fit(kinds, train_raw).to_json()
    assert manifest["seeds"][0]["feature_scaling"] == json.loads(json.dumps(fitted))
    assert "feature_scaling" not in results["seeds"][0]  # predictor.json only.

    loaded = predictor.Predictor.load(root / "ft")
    assert loaded.params[0]["head_hidden"]["kernel"].shape == (
        32 + 2048 + len(fitted["rdkit_2d_names"]),
        32,
    )
    test = by_part["test"]
    predictions = loaded.predict(test)[0]
    labels = np.stack([r["labels"] for r in test])
    score, per_task = metrics.rmse(labels, predictions, ~np.isnan(labels))
    # The same molecules through Predictor score what the run's evaluation scored.
    assert score == pytest.approx(results["seeds"][0]["test"], rel=1e-5)
    assert list(results["seeds"][0]["test_per_task"].values()) == pytest.approx(per_task, rel=1e-5)
    # The saved scaling is what prediction uses: another one gives other predictions.
    shifted = json.loads(json.dumps(manifest))
    seed = shifted["seeds"][0]["feature_scaling"]
    seed["rdkit_2d_mean"] = [m + 1.0 for m in seed["rdkit_2d_mean"]]
    other = dataclasses.replace(loaded, manifest=shifted).predict(test)[0]
    assert np.abs(other - predictions).max() > 1e-4
    # From SMILES, as `moleblend predict` reads them (canonicalised, featurised in process).
    table = api.Predictor.load(root / "ft").predict([str(r["smiles"]) for r in test])
    np.testing.assert_allclose(table[results["tasks"]].to_numpy(), predictions, atol=1e-4)


def test_results_carry_the_other_metrics_per_task(with_features):
    _, _, results = with_features
    seed = results["seeds"][0]
    scored = seed["test_metrics"]
    assert list(scored) == ["rmse", "mae", "r2", "spearman"]
    assert scored["rmse"]["mean"] == seed["test"]
    assert scored["rmse"]["per_task"] == seed["test_per_task"]
    assert set(scored["r2"]["per_task"]) == set(results["tasks"])
    summary = results["test_metrics"]
    assert summary["spearman"]["mean"] == scored["spearman"]["mean"]
    assert summary["spearman"]["std"] == 0.0  # One seed.


def test_unknown_extra_features_are_refused_before_any_data(tmp_path):
    _write_fixture(tmp_path / "mine.csv", num=20)
    with pytest.raises(UserError, match="config.extra_features='ecfp'"):
        protocol.run(_config(tmp_path / "mine.csv", extra_features="ecfp"), tmp_path / "ft")
    assert not (tmp_path / "ft" / "data").exists()
