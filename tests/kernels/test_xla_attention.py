"""The model's XLA attention (query blocks, hand-written backward) against the plain-jnp reference."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from heph_jax.kernels.flash_attention import mha_reference
from heph_jax.kernels.xla_attention import xla_attention
from heph_jax.model.llama import _REMAT_POLICIES

from attention_testing import (assert_close, assert_remat_invariant, attention_inputs,
                               random_segments, value_and_grads)


# (batch, seq, heads, kv_heads, head_dim, causal, segments, causal_block): GQA 4:1, 8:2 and 1:1,
# blocks that do not divide seq, one block longer than seq, the default block choice.
CASES = [
    (2, 200, 4, 1, 64, True, True, None),
    (2, 130, 8, 2, 32, False, True, None),  # one row is all padding
    (1, 96, 2, 2, 16, True, False, 40),
    (2, 64, 4, 4, 16, True, True, 512),
    (1, 515, 2, 1, 16, True, True, None),  # 8 blocks of 65 rows, the last one 60
]


@pytest.mark.parametrize("batch,seq,heads,kv_heads,head_dim,causal,segments,block", CASES)
def test_float32_matches_reference(batch, seq, heads, kv_heads, head_dim, causal, segments, block):
  rng = np.random.default_rng(seq)
  q, k, v, cotangent = attention_inputs(seq, batch, seq, heads, kv_heads, head_dim)
  segment_ids = random_segments(rng, batch, seq, all_padding_row=not causal) if segments else None
  actual = value_and_grads(xla_attention, q, k, v, segment_ids, cotangent, causal=causal,
                            causal_block=block)
  expected = value_and_grads(mha_reference, q, k, v, segment_ids, cotangent, causal=causal)
  assert_close(actual, expected, 1e-5)


def test_bfloat16_matches_float32_reference():
  rng = np.random.default_rng(1)
  q, k, v, cotangent = attention_inputs(7, 2, 200, 4, 2, 32, jnp.bfloat16)
  segment_ids = random_segments(rng, 2, 200)
  out, vjp = jax.vjp(lambda q, k, v: xla_attention(q, k, v, segment_ids), q, k, v)
  assert [x.dtype for x in (out, *vjp(out))] == [jnp.bfloat16] * 4
  actual = value_and_grads(xla_attention, q, k, v, segment_ids, cotangent)
  # The reference sees the same bf16-rounded inputs but computes everything in float32.
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  expected = value_and_grads(mha_reference, *f32, segment_ids, cotangent)
  assert_close(actual, expected, 2e-2)


@pytest.mark.parametrize("policy", sorted(_REMAT_POLICIES))
def test_gradients_under_every_remat_policy(policy):
  """The model wraps each layer in jax.checkpoint; the custom backward must give the same grads."""
  attend = lambda q, k, v, segment_ids: xla_attention(q, k, v, segment_ids, causal_block=48)
  assert_remat_invariant(attend, _REMAT_POLICIES[policy])
