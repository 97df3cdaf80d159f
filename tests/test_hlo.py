"""Collectives read from HLO text: kinds, shapes, bytes, groups and the operations they came from."""

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import jax.numpy as jnp

from wtfree import hlo
from wtfree import sharding

_TEXT = """
ENTRY %main (p: f32[8,4]) -> f32[4] {
  %all-reduce.3 = (f32[3,3,8,8]{3,2,1,0}, f32[8]{0}, f32[]) all-reduce(%a, %b, %c), channel_id=1, \
replica_groups=[1,8]<=[8], to_apply=%add, \
metadata={op_name="jit(f)/(transpose(jvp(M))/conv:jvp(M)/bn/reduce_sum:jvp()/x)"}
  %all-gather = bf16[64,10]{1,0} all-gather(%l), channel_id=2, replica_groups={{0,1},{2,3}}, dimensions={0}
  %cp = f32[16]{0} collective-permute(%d), source_target_pairs={{0,1}}
  ROOT %all-reduce.4 = f32[4]{0} all-reduce(%e), replica_groups=mesh['axis_0'=8,'axis_1'=2] {'axis_0'}, to_apply=%add
}
"""


def test_each_collective_has_its_kind_shapes_bytes_and_group():
  ops = hlo.collectives(_TEXT)
  assert [op.kind for op in ops] == ["all-reduce", "all-gather", "collective-permute", "all-reduce"]
  first = ops[0]
  assert first.shapes == ("f32[3,3,8,8]", "f32[8]", "f32[]") and first.sizes == (576, 8, 1)
  assert (first.elements, first.bytes, first.group_size) == (585, 4 * 585, 8)
  assert (ops[1].bytes, ops[1].group_size) == (2 * 640, 2)
  assert ops[3].group_size == 8
  assert hlo.summary(ops)["all-reduce"] == {"count": 2, "elements": 589, "bytes": 4 * 589}
  assert hlo.programs(_TEXT) == 1


def test_a_combined_ops_results_are_named_one_by_one():
  names = hlo.element_names(hlo.collectives(_TEXT)[0])
  assert names == ("jit(f)/transpose(jvp(M))/conv", "jit(f)/jvp(M)/bn/reduce_sum", "jit(f)/jvp()/x")
  assert [hlo.in_forward_pass(n) for n in names] == [False, True, True]


def test_a_sharded_sum_compiles_to_one_all_reduce():
  mesh = sharding.make_mesh(jax.devices()[:8])
  x = jax.device_put(jnp.ones((16, 4)), NamedSharding(mesh, P(sharding.DATA_AXIS)))
  ops = hlo.collectives(jax.jit(lambda x: x.sum(0)).lower(x).compile().as_text())
  assert [(op.kind, op.shapes, op.group_size) for op in ops] == [("all-reduce", ("f32[4]",), 8)]
