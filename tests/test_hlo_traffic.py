"""Memory traffic per instruction from optimized HLO text (train/hlo_traffic.py)."""
# ruff: noqa: E501 (HLO text lines are long)

import jax
import jax.numpy as jnp
import pytest

from moleblend_jax.train import hlo_traffic
from moleblend_jax.train.compiled import xla_cost

# The shape of a TPU module's text: typed parameters in the entry's header, operands by name,
# tiled layouts, on-chip buffers in memory space S(1), async copies as -start/-done pairs.
_TPU_TEXT = """HloModule jit_step

%fused_computation.1 (p: f32[16,65]) -> f32[16,65] {
  ROOT %p = f32[16,65]{1,0} parameter(0)
}

ENTRY %main (param.0: f32[16,65], param.1: bf16[3,24]) -> f32[16,65] {
  %param.0 = f32[16,65]{1,0:T(8,128)} parameter(0)
  %param.1 = bf16[3,24]{1,0:T(8,128)(2,1)} parameter(1)
  %copy-start.1 = (bf16[3,24]{1,0:T(8,128)(2,1)}, bf16[3,24]{1,0:T(8,128)(2,1)S(1)}, u32[]{:S(2)}) copy-start(%param.1)
  %copy-done.1 = bf16[3,24]{1,0:T(8,128)(2,1)S(1)} copy-done(%copy-start.1)
  %fusion.1 = f32[16,65]{1,0:T(8,128)} fusion(%param.0, %copy-done.1), kind=kLoop, calls=%fused_computation.1, metadata={op_name="jit(step)/transpose(jvp(MoleBlend))/encoder/layer_3/attention/mul"}
  ROOT %fusion.2 = f32[16,65]{1,0:T(8,128)} fusion(%fusion.1), kind=kLoop, calls=%fused_computation.1, metadata={op_name="jit(step)/jvp(MoleBlend)/edge_head/sub"}
}
"""


def test_tiled_layouts_round_the_two_minor_dimensions_up():
    # [16, 65] f32 in (8, 128) tiles occupies [16, 128]; bf16 [3, 24] occupies [8, 128].
    assert hlo_traffic.array_bytes("f32", "16,65", "1,0:T(8,128)") == (16 * 128 * 4, True)
    assert hlo_traffic.array_bytes("bf16", "3,24", "1,0:T(8,128)(2,1)S(1)") == (8 * 128 * 2, False)
    assert hlo_traffic.array_bytes("f32", "16,65", None) == (16 * 65 * 4, True)
    # Minor-to-major {0,1}: dimension 0 is the minor one.
    assert hlo_traffic.array_bytes("f32", "65,16", "0,1:T(8,128)") == (16 * 128 * 4, True)


def test_each_instruction_is_charged_its_operands_and_result():
    items = {item.name: item for item in hlo_traffic.accesses(_TPU_TEXT)}
    assert set(items) == {"copy-start.1", "fusion.1", "fusion.2"}
    f32_tile, bf16_tile = 16 * 128 * 4, 8 * 128 * 2
    # The async copy: its destination read and written; half of that in HBM (the source).
    assert (items["copy-start.1"].bytes, items["copy-start.1"].hbm_bytes) == (
        2 * bf16_tile,
        bf16_tile,
    )
    # An op name-less copy takes its operand's: here an entry parameter's.
    assert items["copy-start.1"].op_name == "(parameter)"
    assert items["fusion.1"].bytes == 2 * f32_tile + bf16_tile
    assert items["fusion.1"].hbm_bytes == 2 * f32_tile
    assert items["fusion.2"].bytes == 2 * f32_tile


def test_by_source_folds_layers_and_splits_phases():
    rows = hlo_traffic.by_source(hlo_traffic.accesses(_TPU_TEXT))
    f32_tile, bf16_tile = 16 * 128 * 4, 8 * 128 * 2
    assert rows == [
        {
            "phase": "backward",
            "source": "encoder/layer_*/attention",
            "bytes": 2 * f32_tile + bf16_tile,
            "count": 1,
        },
        {"phase": "forward", "source": "edge_head/sub", "bytes": 2 * f32_tile, "count": 1},
        {"phase": "staging", "source": "(parameter)", "bytes": 2 * bf16_tile, "count": 1},
    ]


@pytest.mark.parametrize("size", [256, 1024])
def test_a_compiled_elementwise_program_matches_xla_bytes_accessed(size):
    compiled = jax.jit(lambda x: jnp.sin(x) * 2 + 1).lower(jnp.zeros((size, size))).compile()
    items = hlo_traffic.accesses(compiled.as_text())
    # One fused pass: read x, write the result (CPU layouts are not tiled).
    assert sum(item.bytes for item in items) == 2 * size * size * 4
    assert sum(item.bytes for item in items) == xla_cost(compiled)["bytes accessed"]


_CONDITIONAL_TEXT = """HloModule jit_step

%skip (p.1: f32[16,128]) -> f32[16,128] {
  ROOT %p.1 = f32[16,128]{1,0} parameter(0)
}

%update (p.2: f32[16,128]) -> f32[16,128] {
  %p.2 = f32[16,128]{1,0} parameter(0)
  ROOT %fusion.3 = f32[16,128]{1,0} fusion(%p.2), kind=kLoop, calls=%skip, metadata={op_name="jit(step)/cond/branch_1_fun/add"}
}

ENTRY %main (param.0: pred[], param.1: f32[16,128]) -> f32[16,128] {
  %param.0 = pred[]{:T(128)} parameter(0)
  %param.1 = f32[16,128]{1,0} parameter(1)
  ROOT %conditional.1 = f32[16,128]{1,0} conditional(%param.0, %param.1, %param.1), branch_computations={%skip, %update}
}
"""


def test_a_conditional_costs_its_costlier_branch():
    items = hlo_traffic.accesses(_CONDITIONAL_TEXT)
    assert [(item.name, item.bytes) for item in items] == [("fusion.3", 2 * 16 * 128 * 4)]
    assert hlo_traffic.phase(items[0].op_name) == "update"
