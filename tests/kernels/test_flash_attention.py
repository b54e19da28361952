"""Pallas flash attention (interpret mode on CPU) against plain-jnp references: forward and gradients."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax.sharding import AxisType

from heph_jax.kernels.flash_attention import BlockSizes, flash_attention, mha_reference
from heph_jax.kernels.xla_attention import xla_attention
from heph_jax.model.attention import pallas_attention

from attention_testing import (assert_close, attention_inputs, random_segments, relative_error,
                               sharded_value_and_grads, value_and_grads)


# (batch, seq, heads, kv_heads, head_dim, causal, segments, block_sizes); no seq is a multiple of
# every block, H:KV covers 1:1, 4:1 and 8:1, head_dim 64 (heads layout) and 128 (fused layout).
_MIXED_BLOCKS = BlockSizes(256, 128, 128, 256, 256, 128)
F32_CASES = [
    (2, 200, 4, 1, 64, True, True, None),
    (2, 300, 8, 1, 128, False, True, None),  # one row is all padding
    (1, 100, 2, 2, 64, False, False, None),  # shorter than one block
    (1, 320, 2, 2, 128, True, False, _MIXED_BLOCKS),
    pytest.param(1, 384, 4, 1, 64, True, True, _MIXED_BLOCKS, marks=pytest.mark.slow),
    pytest.param(2, 130, 8, 2, 128, False, True, BlockSizes(128, 256, 256, 128, 128, 256),
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("batch,seq,heads,kv_heads,head_dim,causal,segments,blocks", F32_CASES)
def test_float32_matches_reference(batch, seq, heads, kv_heads, head_dim, causal, segments, blocks):
  rng = np.random.default_rng(seq + heads)
  q, k, v, cotangent = attention_inputs(seq, batch, seq, heads, kv_heads, head_dim)
  segment_ids = random_segments(rng, batch, seq, all_padding_row=not causal) if segments else None
  kwargs = dict(causal=causal, block_sizes=blocks)
  actual = value_and_grads(flash_attention, q, k, v, segment_ids, cotangent, **kwargs)
  expected = value_and_grads(mha_reference, q, k, v, segment_ids, cotangent, **kwargs)
  assert_close(actual, expected, 2e-3)


@pytest.mark.parametrize("heads,kv_heads,head_dim,causal", [
    (4, 1, 128, True), pytest.param(2, 2, 64, False, marks=pytest.mark.slow)])
def test_bfloat16_matches_float32_reference(heads, kv_heads, head_dim, causal):
  rng = np.random.default_rng(heads)
  q, k, v, cotangent = attention_inputs(7, 2, 200, heads, kv_heads, head_dim, jnp.bfloat16)
  segment_ids = random_segments(rng, 2, 200)
  actual = value_and_grads(flash_attention, q, k, v, segment_ids, cotangent, causal=causal)
  assert all(x.dtype == jnp.float32 for x in actual)
  # The reference sees the same bf16-rounded inputs but computes everything in float32.
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  expected = value_and_grads(mha_reference, *f32, segment_ids, cotangent, causal=causal)
  assert_close(actual, expected, 2e-2)


def test_matches_model_xla_path_on_real_tokens():
  """pallas_attention vs the model's own xla_attention; padding rows get no cotangent."""
  rng = np.random.default_rng(0)
  q, k, v, cotangent = attention_inputs(3, 2, 160, 4, 2, 64)
  segment_ids = random_segments(rng, 2, 160)
  cotangent = cotangent * (segment_ids != 0)[:, :, None, None]
  actual = value_and_grads(pallas_attention, q, k, v, segment_ids, cotangent)
  expected = value_and_grads(xla_attention, q, k, v, segment_ids, cotangent)
  real = (segment_ids != 0)[:, :, None, None]
  actual[0], expected[0] = actual[0] * real, expected[0] * real
  assert_close(actual, expected, 2e-3)


def test_causal_blocks_above_the_diagonal_are_never_read():
  """NaN keys/values in block 1 cannot reach query block 0 (forward, dq) unless it is computed;
  NaN queries in block 0 cannot reach dk/dv of key block 1 unless that pair is computed."""
  q, k, v, cotangent = attention_inputs(5, 1, 256, 2, 1, 128)
  poison = jnp.arange(256)[None, :, None, None] >= 128
  out, dq, _, _ = value_and_grads(flash_attention, q, jnp.where(poison, jnp.nan, k),
                                   jnp.where(poison, jnp.nan, v), None, cotangent)
  expected = value_and_grads(mha_reference, q[:, :128], k[:, :128], v[:, :128], None,
                              cotangent[:, :128])
  assert relative_error(out[:, :128], expected[0]) <= 2e-3
  assert relative_error(dq[:, :128], expected[1]) <= 2e-3

  _, _, dk, dv = value_and_grads(flash_attention, jnp.where(poison, q, jnp.nan), k, v, None,
                                  jnp.where(poison, cotangent, jnp.nan))
  assert bool(jnp.all(jnp.isfinite(dk[:, 128:]))) and bool(jnp.all(jnp.isfinite(dv[:, 128:])))


def test_sharded_over_mesh_matches_reference():
  """Under jax.set_mesh (2x2x2 over 8 CPU devices) the kernel runs per shard in shard_map."""
  actual, expected, _ = sharded_value_and_grads("pallas", 11, 4, 136, 4, 2, 64)
  assert_close(actual, expected, 2e-3)
  # Batch 1 divides no batch axis: the kernel must still run (replicated over data/fsdp).
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
  q, k, v, cotangent = attention_inputs(11, 1, 136, 4, 2, 64)
  segment_ids = random_segments(np.random.default_rng(11), 1, 136)
  with jax.set_mesh(mesh):
    single = value_and_grads(pallas_attention, q, k, v, segment_ids, cotangent)
  assert_close(single, value_and_grads(mha_reference, q, k, v, segment_ids, cotangent), 2e-3)


def test_invalid_arguments_fail_with_clear_errors():
  with pytest.raises(ValueError, match=r"BlockSizes.block_q must be a positive multiple of 128"):
    BlockSizes(block_q=100)
  with pytest.raises(ValueError, match=r"BlockSizes.block_k_dkv"):
    BlockSizes(block_k_dkv=0)
  q = jnp.zeros((1, 16, 6, 64))
  kv = jnp.zeros((1, 16, 4, 64))
  with pytest.raises(ValueError, match=r"multiple of kv heads"):
    flash_attention(q, kv, kv)
  with pytest.raises(ValueError, match=r"segment_ids shape"):
    flash_attention(q, q, q, jnp.zeros((1, 8), jnp.int32))
  with pytest.raises(ValueError, match=r"block_sizes must be a BlockSizes"):
    flash_attention(q, q, q, block_sizes=(128, 128))
