"""Ahead-of-time sizing (train/aot.py, experiments/aot_compile.py): names, HLO parsing, and the
run's programs compiled for fake CPU devices and, where libtpu is installed, for a TPU slice."""

import importlib.util
import json

import pytest
from script_testing import run_experiment
from train_testing import small_config

from moleblend_jax.errors import UserError
from moleblend_jax.train import aot, hlo_stats


@pytest.mark.parametrize(
    "name, topology",
    [
        ("v4-32", "v4:2x2x4"),  # v4 names count TensorCores: 16 chips.
        ("v5p-128", "v5:4x4x4"),
        ("v5e-256", "v5e:16x16"),  # v5e and v6e names count chips.
        ("v6e-64", "v6e:8x8"),
        ("v5e:4x4", "v5e:4x4"),
        ("v5p:2x2x1", "v5:2x2x1"),
    ],
)
def test_maxtext_names_become_libtpu_topologies(name, topology):
    assert aot.tpu_topology_name(name) == topology


@pytest.mark.parametrize("name", ["v5e-3", "v7-8", "tpu"])
def test_unknown_topologies_are_one_line_errors(name):
    with pytest.raises(UserError, match="v5e"):
        aot.tpu_topology_name(name)


def test_replica_groups_in_both_printed_forms():
    assert hlo_stats.replica_groups("x, replica_groups={{0,1},{2,3}}, y", 4) == [[0, 1], [2, 3]]
    assert hlo_stats.replica_groups("replica_groups=[2,2]<=[4]", 4) == [[0, 1], [2, 3]]
    assert hlo_stats.replica_groups("replica_groups=[2,2]<=[2,2]T(1,0)", 4) == [[0, 2], [1, 3]]


HLO = """\
  %all-reduce.1 = (f32[8]{0}, bf16[4,4]{1,0}) all-reduce(%a, %b), replica_groups={{0,1},{2,3}}
  %all-gather-start.2 = f32[16,2]{1,0} all-gather-start(%c), replica_groups=[2,2]<=[4]
  %all-gather-done.2 = f32[16,2]{1,0} all-gather-done(%all-gather-start.2)
  %all-reduce.3 = f32[2]{0} all-reduce(%d), replica_groups={{0,2},{1,3}}
  %send.1 = (f32[1,8,128]{2,1,0}, u32[], token[]) send(%e, %t), frontend_attributes={\
_xla_host_transfer_rendezvous="all-reduce.7_0",_xla_megascale_transfer_type="ALL_REDUCE"}
  %recv.1 = (f32[1,8,128]{2,1,0}, u32[], token[]) recv(%t), frontend_attributes={\
_xla_host_transfer_rendezvous="all-reduce.7_0",_xla_megascale_transfer_type="ALL_REDUCE"}
  %fusion.9 = f32[64,64]{1,0} fusion(%f), kind=kLoop, metadata={op_name="jit(f)/a/b/c/mul"}
"""


def test_collectives_count_kinds_bytes_and_transfers_between_slices():
    found = hlo_stats.collectives(HLO, slices=[0, 0, 1, 1])
    assert found["all-reduce"] == {"count": 1, "bytes": 8 * 4 + 16 * 2}  # Within each slice.
    assert found["all-gather"] == {"count": 1, "bytes": 16 * 2 * 4}
    # One HLO all-reduce whose groups span slices, one transfer to the multi-slice runtime
    # (counted once for its send and recv).
    assert found["dcn-all-reduce"] == {"count": 2, "bytes": 2 * 4 + 8 * 128 * 4}
    assert hlo_stats.largest_buffers(HLO, 1) == [
        {"bytes": 64 * 64 * 4, "shape": "f32[64,64]", "op": "a/b/c/mul"}
    ]


def _report(path):
    report = json.loads(path.read_text())
    return report, {(p["name"], p["batch_shape"]): p for p in report["programs"]}


def test_cpu_topology_compiles_every_program_the_run_compiles(tmp_path):
    out = tmp_path / "cpu4.json"
    result = run_experiment(
        "aot_compile.py",
        "--config=configs/base.py:tiny",
        "--topology=cpu-4",
        "--config.model.num_layers=1",
        "--config.batch_size=8",
        f"--out={out}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Nothing here is a timing" in result.stdout
    report, programs = _report(out)
    assert report["devices"] == 4 and report["molecules_per_device"] == 2
    assert set(programs) == {("init", ""), ("train_step", "8x16"), ("train_step", "8x32"),
                             ("eval_step", "8x32")}  # fmt: skip
    train = programs[("train_step", "8x32")]
    assert train["flops"] > programs[("train_step", "8x16")]["flops"] > 0
    memory = train["memory"]
    assert memory["total"] == (
        memory["arguments"] + memory["outputs"] + memory["temporaries"] - memory["aliased"]
    )
    assert "all-reduce" in train["collectives"]  # The gradient's, over the 4 devices.


def test_an_unknown_topology_is_one_line_exit_2(tmp_path):
    result = run_experiment("aot_compile.py", "--config=configs/base.py:tiny", "--topology=v9-8")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: Unknown topology 'v9-8'")


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed")
def test_a_tpu_slice_compiles_with_its_per_chip_batch_and_gradient_all_reduce():
    config = small_config(batch_size=32, **{"data.buckets": (16,), "model.dtype": "bfloat16"})
    facts, reports = aot.compile_run(config, aot.topology_devices("v5e:2x2"), progress=print)
    assert facts["devices"] == 4 and facts["molecules_per_device"] == 8
    assert facts["chip"]["name"] == "v5e"
    programs = {r.name: r for r in reports}
    assert set(programs) == {"init", "train_step", "eval_step"}
    train = programs["train_step"]
    assert train.batch_shape == "32x16" and train.fits
    # (This small a step may keep every temporary in on-chip memory: none in HBM.)
    assert 0 < train.memory["total"] < 16 * 2**30 and train.memory["arguments"] > 0
    assert train.flops > 0 and train.bytes_accessed > 0
    assert train.roofline["bound_s"] == max(train.roofline["compute_s"], train.roofline["memory_s"])
    assert train.molecules_per_second == pytest.approx(32 / train.roofline["bound_s"])
    assert train.collectives["all-reduce"]["count"] >= 1


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed")
def test_two_slices_cross_dcn_once_per_step():
    config = small_config(batch_size=32, **{"data.buckets": (16,), "model.dtype": "bfloat16"})
    facts, reports = aot.compile_run(config, aot.topology_devices("v5e:2x2", num_slices=2))
    assert facts["slices"] == 2 and facts["mesh"] == {"dcn_data": 2, "data": 4, "fsdp": 1}
    train = next(r for r in reports if r.name == "train_step")
    # Loss, metrics and every gradient in one all-reduce across the slices, one within each;
    # with ZeRO-1 (config.mesh.shard_optimizer_state) XLA gathers the small updated parameters
    # (biases, norms) with a second all-reduce within each slice.
    assert train.collectives["dcn-all-reduce"]["count"] == 1
    assert 1 <= train.collectives["all-reduce"]["count"] <= 2
    assert set(train.collectives) - {"dcn-all-reduce"} <= {
        "all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter"
    }  # fmt: skip
