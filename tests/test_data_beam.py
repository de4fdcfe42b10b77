"""The Beam shard writer (multi-process DirectRunner) writes what the local writer writes."""

import os

import pytest

pytest.importorskip("apache_beam")  # The `beam` extra.

from moleblend_jax.data import beam_shards, build_shards, featurize, iter_records  # noqa: E402
from moleblend_jax.data.serialize import read_frames  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data")
HOSTILE = os.path.join(DATA, "hostile.smi")
TWO_PROCESSES = beam_shards.direct_options(2)


def _frames_by_id(out):
    """{molecule id: serialized record} of a shard directory."""
    ids = [int(r["id"]) for r in iter_records(out)]
    names = sorted(n for n in os.listdir(out) if n.startswith("shard-"))
    frames = [list(read_frames(os.path.join(out, n))) for n in names]
    ordered = [frames[k % len(names)][k // len(names)] for k in range(len(ids))]
    return dict(zip(ids, ordered, strict=True))


def _assert_same_build(local, beam):
    (local_dir, local_meta), (beam_dir, beam_meta) = local, beam
    assert beam_meta == local_meta  # Skip counts by reason, conformers, sha256 of every shard.
    assert _frames_by_id(beam_dir) == _frames_by_id(local_dir)
    for name in sorted(os.listdir(local_dir)):
        with open(os.path.join(local_dir, name), "rb") as a:
            with open(os.path.join(beam_dir, name), "rb") as b:
                assert a.read() == b.read(), name
    assert sorted(os.listdir(beam_dir)) == sorted(os.listdir(local_dir))


@pytest.mark.parametrize(
    "source, chunk_size, kwargs",
    [
        # DFT coordinates; too_many_atoms skips; 5 chunks of 64.
        ("qm9", 64, dict(limit=300, max_atoms=5, num_shards=3)),
        # Every skip reason of a .smi, RDKit conformers; 12 shards for 10 molecules (2 empty).
        (HOSTILE, 4, dict(conformers="rdkit", max_atoms=32, num_shards=12)),
    ],
    ids=["qm9", "hostile"],
)
def test_beam_equals_local(tmp_path, monkeypatch, source, chunk_size, kwargs):
    monkeypatch.setattr(featurize, "CHUNK_SIZE", chunk_size)  # Several chunks per worker.
    builds = []
    for runner in ("local", "beam"):
        out = str(tmp_path / runner)
        options = TWO_PROCESSES if runner == "beam" else None
        meta = build_shards(
            source,
            out,
            workers=2,
            runner=runner,
            pipeline_options=options,
            progress=False,
            **kwargs,
        )
        builds.append((out, meta))
    assert builds[0][1]["num_skipped"] > 0
    _assert_same_build(*builds)
