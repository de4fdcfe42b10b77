"""Shard writer / reader: round trip, determinism, atomicity, corruption, bad input, sources."""

import gzip
import json
import os

import numpy as np
import pytest

from moleblend_jax.chem import qm9, smiles_to_record
from moleblend_jax.data import build_shards, featurize, iter_records
from moleblend_jax.data.serialize import CorruptRecordError, decode_record, encode_record
from moleblend_jax.data.sources import FileInput, SourceItem

DATA = os.path.join(os.path.dirname(__file__), "data")
HOSTILE = os.path.join(DATA, "hostile.smi")


def _assert_records_equal(a, b):
    assert set(a) == set(b)
    for key in a:
        if key == "smiles":
            assert a[key] == b[key]
        else:
            x, y = np.asarray(a[key]), np.asarray(b[key])
            assert x.dtype == y.dtype and x.shape == y.shape, key
            np.testing.assert_array_equal(x, y, err_msg=key)


def test_encode_decode_round_trip():
    for smiles in ["CC(=O)Oc1ccccc1C(=O)O", "[Na+].[Cl-]", "C", "C1CCCCCCCCCCCC1.CCO"]:
        rec = smiles_to_record(smiles, 12345678901, conformers="rdkit", labels=[1.5, np.nan, -2.0])
        _assert_records_equal(decode_record(encode_record(rec)), rec)


def test_reader_refuses_other_schema_versions(tmp_path):
    (tmp_path / "metadata.json").write_text(json.dumps(dict(schema_version=1, shards=[])))
    with pytest.raises(ValueError, match=r"schema_version 1 != \d+ .*rebuild the shards") as err:
        iter_records(tmp_path).__next__()
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("hostile"))
    meta = build_shards(
        HOSTILE, out, num_shards=3, workers=1, max_atoms=32, conformers="rdkit", progress=False
    )
    return out, meta


def test_hostile_file_counts(hostile):
    out, meta = hostile
    assert meta["skipped"] == {
        "empty_line": 2,
        "invalid_smiles": 2,
        "kekulize_error": 1,
        "too_many_atoms": 1,
        "valence_error": 1,
    }
    records = list(iter_records(out))
    assert meta["num_written"] == len(records) == 10
    # Ids are source line numbers; the header line (0) is not a molecule.
    assert [int(r["id"]) for r in records] == [1, 7, 8, 9, 10, 11, 12, 14, 16, 17]
    by_id = {int(r["id"]): r for r in records}
    assert len(by_id[9]["atom_features"]) == 1  # Single atoms are kept.
    assert by_id[7]["spd"][0, 1] == 510  # Salt: fragments unreachable.
    assert all(r["has_coords"] == 1 for r in records)
    assert sum(meta["conformers"].values()) == 10


def test_written_records_equal_direct_records(hostile):
    out, _ = hostile
    rec = next(iter_records(out))
    _assert_records_equal(rec, smiles_to_record("CCO", 1, conformers="rdkit", name="ethanol"))


def test_deterministic_across_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(featurize, "CHUNK_SIZE", 4)  # Several chunks, so two workers do run.
    dirs = []
    for workers in (1, 2):
        out = str(tmp_path / f"w{workers}")
        build_shards(
            HOSTILE, out, num_shards=2, workers=workers, conformers="rdkit", progress=False
        )
        dirs.append(out)
    names = sorted(os.listdir(dirs[0]))
    assert names == sorted(os.listdir(dirs[1]))
    for name in names:
        with (
            open(os.path.join(dirs[0], name), "rb") as a,
            open(os.path.join(dirs[1], name), "rb") as b,
        ):
            assert a.read() == b.read(), name


def test_qm9_prefix(tmp_path):
    out = str(tmp_path / "qm9")
    meta = build_shards("qm9", out, num_shards=4, workers=1, limit=300, progress=False)
    assert meta["num_written"] == 300 and meta["num_skipped"] == 0
    assert meta["label_names"][:3] == ["mu", "alpha", "homo"] and meta["num_labels"] == 12
    records = list(iter_records(out))
    ids = [int(r["id"]) for r in records]  # QM9 indices (with gaps), in source order.
    assert ids[0] == 1 and ids == sorted(set(ids)) and 58 not in ids
    first = records[0]  # Methane: one heavy atom at the DFT position; U0 = -40.47893 Ha.
    np.testing.assert_allclose(first["coords"], [[-0.0126981359, 1.0858041578, 0.0080009958]])
    # Labels leave the source in label units (eV, chem/qm9.py).
    np.testing.assert_allclose(first["labels"][7], -40.47893 * qm9.HARTREE_TO_EV)
    for r in records:  # DFT coordinates in graph order: bonded atoms are close.
        ends = r["bond_atoms"]
        lengths = np.linalg.norm(r["coords"][ends[:, 0]] - r["coords"][ends[:, 1]], axis=1)
        assert (lengths < 2.0).all(), r["smiles"]


def test_moses_molecules_build_with_rdkit_conformers(tmp_path):
    """The bundled MOSES subset: ids are lines of the subset, coordinates ETKDG (+MMFF) by
    default, a held-out set is the entries after a training prefix."""
    out = str(tmp_path / "moses")
    meta = build_shards("moses", out, num_shards=2, workers=1, limit=6, progress=False)
    assert meta["args"]["input"] == "moses" and meta["args"]["conformers"] == "rdkit"
    assert meta["num_written"] + meta["num_skipped"] == 6 and meta["num_written"] >= 5
    assert set(meta["conformers"]) <= {"etkdg+mmff", "etkdg", "etkdg_random_coords+mmff"}
    records = list(iter_records(out))
    assert [int(r["id"]) for r in records] == list(range(len(records)))
    for r in records:  # Drug-like (MOSES: 250-350 Da) with a 3D conformer in graph order.
        assert 10 <= len(r["atom_features"]) <= 40 and int(r["has_coords"]) == 1
        spread = np.ptp(r["coords"], axis=0)  # In the principal-axes frame: x >= y >= z.
        assert spread[0] >= spread[1] > 0.5, spread
        ends = r["bond_atoms"]
        lengths = np.linalg.norm(r["coords"][ends[:, 0]] - r["coords"][ends[:, 1]], axis=1)
        assert (lengths > 1.0).all() and (lengths < 2.0).all(), r["smiles"]
    assert max(np.ptp(r["coords"][:, 2]) for r in records) > 0.5  # Not all flat: 3D.
    held_out = build_shards(
        "moses", str(tmp_path / "eval"), num_shards=1, workers=1, offset=6, limit=2, progress=False
    )
    assert [int(r["id"]) for r in iter_records(str(tmp_path / "eval"))] == [6, 7]
    assert held_out["args"]["offset"] == 6


def test_qm9_reordered_entry_is_matched():
    # A QM9-style entry whose XYZ lists the heavy atoms in a different order than the SMILES.
    item = SourceItem(
        1,
        smiles="CO",
        labels=(1.0,),
        elements="['O','C','H']",
        xyz="[[0.0,0.0,1.43],[0.0,0.0,0.0],[0.0,0.0,2.4]]",
    )
    record, _ = featurize.item_to_record(item, "file", 32)
    np.testing.assert_allclose(record["coords"], [[0, 0, 0], [0, 0, 1.43]])


def test_rerun_is_noop_and_resumes_after_kill(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    calls = {"n": 0}
    real = featurize.process_chunk

    def dying(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # A kill in the middle of the build.
        return real(*args)

    monkeypatch.setattr(featurize, "CHUNK_SIZE", 4)
    monkeypatch.setattr(featurize, "process_chunk", dying)
    with pytest.raises(KeyboardInterrupt):
        build_shards(HOSTILE, out, num_shards=2, workers=1, conformers="none", progress=False)
    assert not os.path.exists(os.path.join(out, "metadata.json"))
    with pytest.raises(FileNotFoundError, match="did not finish"):
        list(iter_records(out))
    monkeypatch.setattr(featurize, "process_chunk", real)
    meta = build_shards(HOSTILE, out, num_shards=2, workers=1, conformers="none", progress=False)
    assert sorted(os.listdir(out)) == ["metadata.json", *[s["file"] for s in meta["shards"]]]
    stamp = os.path.getmtime(os.path.join(out, "metadata.json"))
    again = build_shards(HOSTILE, out, num_shards=2, workers=1, conformers="none", progress=False)
    assert again == meta and os.path.getmtime(os.path.join(out, "metadata.json")) == stamp
    assert len(list(iter_records(out))) == meta["num_written"]


def test_corrupt_and_truncated_shards_name_the_file(tmp_path):
    out = str(tmp_path / "out")
    meta = build_shards(HOSTILE, out, num_shards=2, workers=1, conformers="none", progress=False)
    path = os.path.join(out, meta["shards"][1]["file"])
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(CorruptRecordError, match=meta["shards"][1]["file"]):
        list(iter_records(out))
    open(path, "wb").write(bytes(data[:-7]))
    with pytest.raises(CorruptRecordError, match="truncated"):
        list(iter_records(out))


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_shards(str(tmp_path / "nope.smi"), str(tmp_path / "o"), progress=False)
    empty = tmp_path / "empty.smi"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        build_shards(str(empty), str(tmp_path / "o"), progress=False)
    blank = tmp_path / "blank.smi"
    blank.write_text("\n\nxx\n")
    with pytest.raises(ValueError, match="no molecule"):
        build_shards(str(blank), str(tmp_path / "o"), conformers="none", progress=False)
    assert not os.path.exists(tmp_path / "o" / "metadata.json")


def test_csv_labels_stay_aligned(tmp_path):
    path = tmp_path / "mols.csv"
    path.write_text(
        "num,name,SMILES,y1,y2\n0,a,CCO,1.0,\n1,b,C1CC,2.0,20\n2,c,,3.0,30\n3,d,c1ccccc1,4.0,40\n"
    )
    out = str(tmp_path / "out")
    meta = build_shards(str(path), out, num_shards=1, workers=1, conformers="none", progress=False)
    assert meta["label_names"] == ["y1", "y2"]
    assert meta["skipped"] == {"empty_smiles": 1, "invalid_smiles": 1}
    records = {int(r["id"]): r for r in iter_records(out)}
    assert sorted(records) == [0, 3]
    assert records[0]["labels"][0] == 1.0 and np.isnan(records[0]["labels"][1])
    assert records[3]["labels"].tolist() == [4.0, 40.0]
    assert records[3]["has_coords"] == 0


def test_pcqm4mv2_fixture(tmp_path):
    out = str(tmp_path / "pcqm")
    sdf = os.path.join(DATA, "pcqm", "pcqm4m-v2-train.sdf")
    meta = build_shards(sdf, out, num_shards=2, workers=1, progress=False)
    assert meta["source_kind"] == "pcqm4mv2" and meta["label_names"] == ["homolumogap"]
    assert meta["skipped"] == {"sdf_parse_error": 1}
    records = {int(r["id"]): r for r in iter_records(out)}
    assert sorted(records) == [0, 1, 3]
    with gzip.open(os.path.join(DATA, "pcqm", "data.csv.gz"), "rt") as f:
        gaps = {int(line.split(",")[0]): line.split(",")[2] for line in f.readlines()[1:]}
    for idx, rec in records.items():  # Labels follow the molecule index, not the position.
        np.testing.assert_allclose(rec["labels"], [float(gaps[idx])], rtol=1e-6)
        assert rec["has_coords"] == 1
    # Graph and coordinates come from the SDF (reversed atom order vs. SMILES): O first.
    assert records[0]["atom_features"][-1, 0] == 7
    assert meta["conformers"] == {"file": 3}


def test_sdf_source(tmp_path):
    sdf = tmp_path / "mols.sdf"
    sdf.write_text(open(os.path.join(DATA, "pcqm", "pcqm4m-v2-train.sdf")).read())
    meta = build_shards(str(sdf), str(tmp_path / "out"), num_shards=1, workers=1, progress=False)
    assert meta["num_written"] == 3 and meta["label_names"] == []
    assert json.load(open(tmp_path / "out" / "metadata.json"))["source_kind"] == "sdf"


def test_smi_names_and_sdf_titles_are_kept(tmp_path, hostile):
    out, _ = hostile
    names = {int(r["id"]): r.get("name") for r in iter_records(out)}
    assert names[1] == "ethanol" and names[7] == "salt" and names[17] == "potassium_benzoate"
    pcqm = os.path.join(DATA, "pcqm", "pcqm4m-v2-train.sdf")
    blocks = open(pcqm).read().split("$$$$\n")[:2]  # Untitled: the first line is empty.
    sdf = tmp_path / "titled.sdf"
    sdf.write_text("".join(f"mol_{i}{block}$$$$\n" for i, block in enumerate(blocks)))
    build_shards(str(sdf), str(tmp_path / "sdf"), num_shards=1, workers=1, progress=False)
    records = list(iter_records(str(tmp_path / "sdf")))
    assert [(int(r["id"]), r["name"]) for r in records] == [(0, "mol_0"), (1, "mol_1")]
    build_shards(pcqm, str(tmp_path / "pcqm"), num_shards=1, workers=1, progress=False)
    assert not any("name" in r for r in iter_records(str(tmp_path / "pcqm")))


def test_rerun_rebuilds_a_shard_with_a_flipped_byte(tmp_path):
    out = str(tmp_path / "out")
    meta = build_shards(HOSTILE, out, num_shards=2, workers=1, conformers="none", progress=False)
    path = os.path.join(out, meta["shards"][0]["file"])
    good = open(path, "rb").read()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0x01  # Same size: only the sha256 tells.
    open(path, "wb").write(bytes(damaged))
    build_shards(HOSTILE, out, num_shards=2, workers=1, conformers="none", progress=False)
    assert open(path, "rb").read() == good


def test_text_in_a_label_column_is_refused_counted_or_logged(tmp_path, caplog):
    from moleblend_jax.errors import UserError

    path = tmp_path / "mols.csv"
    path.write_text("smiles,y,note\nCCO,1.0,a\nCCC,abc,b\nCCCC,,c\nCO,NaN,\n")
    common = dict(num_shards=1, workers=1, conformers="none", progress=False)
    with pytest.raises(UserError, match=r"'y' has 1 non-numeric cells \(row 2: 'abc'\)"):
        build_shards(FileInput(str(path), label_columns=["y"]), str(tmp_path / "named"), **common)
    assert not (tmp_path / "named").exists()
    skip = FileInput(str(path), label_columns=["y"], skip_bad_labels=True)
    meta = build_shards(skip, str(tmp_path / "skip"), **common)
    assert meta["skipped"] == {"bad_label": 1} and meta["num_written"] == 3
    with caplog.at_level("WARNING"):
        meta = build_shards(str(path), str(tmp_path / "auto"), **common)
    assert meta["label_names"] == []
    assert "column 'y' is not a label column: 1 non-numeric cells (row 2: 'abc')" in caplog.text
    assert "column 'note' is not a label column" in caplog.text


def _sdf_text(num):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    return (Chem.MolToMolBlock(Chem.RemoveHs(mol)) + "$$$$\n") * num


def test_unreadable_inputs_are_one_line_errors_and_leave_no_files(tmp_path, file_size_limit):
    from moleblend_jax.errors import UserError

    common = dict(num_shards=2, workers=1, conformers="none", progress=False)
    binary = tmp_path / "mols.smi"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserError, match="not a text file"):
        build_shards(str(binary), str(tmp_path / "binary"), **common)
    junk = tmp_path / "junk.smi"
    junk.write_text("CCO\n" + "".join(f"x{i}((\n" for i in range(19)))
    with pytest.raises(UserError, match="19 of 20 entries could not be parsed"):
        build_shards(str(junk), str(tmp_path / "junk"), **common)
    assert not os.listdir(tmp_path / "junk")
    packed = gzip.compress(_sdf_text(400).encode())  # 180 kB of text: beyond the first check.
    truncated = tmp_path / "mols.sdf.gz"
    truncated.write_bytes(packed[: len(packed) * 3 // 4])
    with pytest.raises(UserError, match=f"{truncated}: truncated or corrupt file"):
        build_shards(str(truncated), str(tmp_path / "sdf"), **common)
    assert not os.listdir(tmp_path / "sdf")
    file_size_limit(600)  # A full disk.
    with pytest.raises(UserError, match=r"\.tmp-shard-0000.-of-00002.tfrecord: writing shards"):
        build_shards(HOSTILE, str(tmp_path / "full"), **common)
    assert not os.listdir(tmp_path / "full")


def test_corrupt_metadata_is_named_and_rebuilt(tmp_path):
    from moleblend_jax.errors import UserError

    out = str(tmp_path / "out")
    meta = build_shards(HOSTILE, out, num_shards=1, workers=1, conformers="none", progress=False)
    with open(os.path.join(out, "metadata.json"), "r+") as f:
        f.truncate(100)
    with pytest.raises(UserError, match=f"{out}/metadata.json: corrupt"):
        list(iter_records(out))
    assert (
        build_shards(HOSTILE, out, num_shards=1, workers=1, conformers="none", progress=False)
        == meta
    )
