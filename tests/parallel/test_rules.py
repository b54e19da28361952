"""The logical-axis rules table is the one source of the batch-shard count that validation checks
and of the kernels' shard_map specs: a custom table changes both, and the kernel stays correct."""
import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec as P

from attention_testing import assert_close, attention_inputs, random_segments, value_and_grads
from conftest import tiny_test_config
from heph_jax import config as config_lib
from heph_jax.errors import ConfigError
from heph_jax.kernels.flash_attention import mha_reference
from heph_jax.model.attention import pallas_attention
from heph_jax.parallel import per_shard, rules

MESH = {"dcn_data": 1, "data": 2, "fsdp": 2, "tensor": 2}
# Batch over 'data' only; heads sharded for q but kept whole for kv (no common axis: not split).
CUSTOM = (("batch", "data"), ("heads", "tensor"), ("kv_heads", None), ("embed", "fsdp"))


def test_default_rules_shard_the_batch_over_every_data_axis():
  assert rules.mesh_axes("batch", rules.DEFAULT_RULES) == ("dcn_data", "data", "fsdp")
  assert rules.mesh_axes("seq", rules.DEFAULT_RULES) == ()
  assert rules.mesh_axes("no_such_axis", rules.DEFAULT_RULES) == ()
  assert rules.batch_shards(MESH, rules.DEFAULT_RULES) == (4, ("dcn_data", "data", "fsdp"))
  assert rules.batch_shards(MESH, CUSTOM) == (2, ("data",))


def test_kernel_specs_follow_the_rules():
  tiles, segments = per_shard.specs(MESH, rules.DEFAULT_RULES, (8, 64, 4, 16), kv_heads=2)
  assert tiles == P(("data", "fsdp"), None, ("tensor",), None) and segments == P(("data", "fsdp"), None)
  tiles, segments = per_shard.specs(MESH, CUSTOM, (8, 64, 4, 16), kv_heads=2)
  assert tiles == P(("data",), None, None, None) and segments == P(("data",), None)
  # A batch that only the first axis divides: 'fsdp' is left out (its shards compute redundantly).
  tiles, _ = per_shard.specs(MESH, rules.DEFAULT_RULES, (2, 64, 4, 16), kv_heads=1)
  assert tiles == P(("data",), None, None, None)


@pytest.mark.parametrize("table, batch, ok", [
    (rules.DEFAULT_RULES, 4, False),  # 8 batch shards (fsdp=8) do not divide 4 sequences
    (CUSTOM, 4, True),                # 'batch' over 'data' (1) only: any batch splits
])
def test_validation_counts_batch_shards_from_the_rules(table, batch, ok):
  config = tiny_test_config({"sources": {}, "tokenizer": ""}, global_batch_size=batch)
  with config.unlocked():
    config.logical_axis_rules = table
  if ok:
    config_lib.validate(config, 8, check_data=False)
  else:
    with pytest.raises(ConfigError, match=r"config\.global_batch_size: .*8 batch shards .*'batch' rule"):
      config_lib.validate(config, 8, check_data=False)


def test_kernel_under_custom_rules_matches_reference():
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
  q, k, v, cotangent = attention_inputs(5, 4, 136, 4, 2, 64)
  segment_ids = random_segments(np.random.default_rng(5), 4, 136)
  with jax.set_mesh(mesh), nn.logical_axis_rules(CUSTOM):
    assert per_shard.active_rules() == CUSTOM
    actual = value_and_grads(pallas_attention, q, k, v, segment_ids, cotangent)
  assert_close(actual, value_and_grads(mha_reference, q, k, v, segment_ids, cotangent), 2e-3)
