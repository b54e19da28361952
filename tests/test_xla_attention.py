"""The model's XLA attention (query blocks, hand-written backward) against the plain-jnp reference."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from heph_jax.kernels.flash_attention import mha_reference
from heph_jax.model.attention import xla_attention
from heph_jax.model.llama import _REMAT_POLICIES


def _segments(rng, batch, seq, all_padding_row=False):
  """Packed rows: a few documents of random lengths, then trailing padding (id 0)."""
  rows = []
  for row in range(batch):
    if all_padding_row and row == batch - 1:
      rows.append(np.zeros(seq, np.int32))
      continue
    real = seq - int(rng.integers(0, seq // 3))
    cuts = np.sort(rng.choice(np.arange(1, real), size=min(3, real - 1), replace=False))
    ids = np.searchsorted(cuts, np.arange(real), side="right") + 1
    rows.append(np.concatenate([ids, np.zeros(seq - real, np.int64)]).astype(np.int32))
  return jnp.asarray(np.stack(rows))


def _inputs(seed, batch, seq, heads, kv_heads, head_dim, dtype=jnp.float32):
  keys = jax.random.split(jax.random.PRNGKey(seed), 4)
  q = jax.random.normal(keys[0], (batch, seq, heads, head_dim), jnp.float32).astype(dtype)
  k = jax.random.normal(keys[1], (batch, seq, kv_heads, head_dim), jnp.float32).astype(dtype)
  v = jax.random.normal(keys[2], (batch, seq, kv_heads, head_dim), jnp.float32).astype(dtype)
  cotangent = jax.random.normal(keys[3], (batch, seq, heads, head_dim), jnp.float32)
  return q, k, v, cotangent


def _value_and_grads(fn, q, k, v, segment_ids, cotangent, **kwargs):
  out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, segment_ids, **kwargs), q, k, v)
  return [x.astype(jnp.float32) for x in (out, *vjp(cotangent.astype(out.dtype)))]


def _assert_close(actual, expected, bound):
  for name, a, e in zip(("out", "dq", "dk", "dv"), actual, expected):
    assert bool(jnp.all(jnp.isfinite(a))), f"{name} has non-finite values"
    error = float(jnp.max(jnp.abs(a - e)) / jnp.max(jnp.abs(e)))
    assert error <= bound, f"{name}: relative error {error:.2e} > {bound:.0e}"


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
  q, k, v, cotangent = _inputs(seq, batch, seq, heads, kv_heads, head_dim)
  segment_ids = _segments(rng, batch, seq, all_padding_row=not causal) if segments else None
  actual = _value_and_grads(xla_attention, q, k, v, segment_ids, cotangent, causal=causal,
                            causal_block=block)
  expected = _value_and_grads(mha_reference, q, k, v, segment_ids, cotangent, causal=causal)
  _assert_close(actual, expected, 1e-5)


def test_bfloat16_matches_float32_reference():
  rng = np.random.default_rng(1)
  q, k, v, cotangent = _inputs(7, 2, 200, 4, 2, 32, jnp.bfloat16)
  segment_ids = _segments(rng, 2, 200)
  out, vjp = jax.vjp(lambda q, k, v: xla_attention(q, k, v, segment_ids), q, k, v)
  assert [x.dtype for x in (out, *vjp(out))] == [jnp.bfloat16] * 4
  actual = _value_and_grads(xla_attention, q, k, v, segment_ids, cotangent)
  # The reference sees the same bf16-rounded inputs but computes everything in float32.
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  expected = _value_and_grads(mha_reference, *f32, segment_ids, cotangent)
  _assert_close(actual, expected, 2e-2)


@pytest.mark.parametrize("policy", sorted(_REMAT_POLICIES))
def test_gradients_under_every_remat_policy(policy):
  """The model wraps each layer in jax.checkpoint; the custom backward must give the same grads."""
  rng = np.random.default_rng(2)
  q, k, v, cotangent = _inputs(11, 2, 150, 4, 2, 16)
  segment_ids = _segments(rng, 2, 150)

  def loss(q, k, v):
    out = xla_attention(jnp.sin(q), k * 2.0, v, segment_ids, causal_block=48)
    return jnp.sum(out * cotangent)

  plain = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
  rematted = jax.grad(jax.checkpoint(loss, policy=_REMAT_POLICIES[policy]), argnums=(0, 1, 2))(q, k, v)
  for a, e in zip(rematted, plain):
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-6, atol=1e-6)
