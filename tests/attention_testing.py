"""Random packed attention inputs and a forward+gradient comparison, for the attention tests."""
import numpy as np

import jax
import jax.numpy as jnp


def random_segments(rng, batch, seq, all_padding_row=False):
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


def attention_inputs(seed, batch, seq, heads, kv_heads, head_dim, dtype=jnp.float32):
  keys = jax.random.split(jax.random.PRNGKey(seed), 4)
  q = jax.random.normal(keys[0], (batch, seq, heads, head_dim), jnp.float32).astype(dtype)
  k = jax.random.normal(keys[1], (batch, seq, kv_heads, head_dim), jnp.float32).astype(dtype)
  v = jax.random.normal(keys[2], (batch, seq, kv_heads, head_dim), jnp.float32).astype(dtype)
  cotangent = jax.random.normal(keys[3], (batch, seq, heads, head_dim), jnp.float32)
  return q, k, v, cotangent


def value_and_grads(fn, q, k, v, segment_ids, cotangent, **kwargs):
  """(out, dq, dk, dv) of fn at (q, k, v) for the given output cotangent, all float32."""
  @jax.jit
  def run(q, k, v, segment_ids, cotangent):
    out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, segment_ids, **kwargs), q, k, v)
    return (out, *vjp(cotangent.astype(out.dtype)))
  return [x.astype(jnp.float32) for x in run(q, k, v, segment_ids, cotangent)]


def relative_error(actual, expected):
  return float(jnp.max(jnp.abs(actual - expected)) / jnp.max(jnp.abs(expected)))


def assert_close(actual, expected, bound):
  for name, a, e in zip(("out", "dq", "dk", "dv"), actual, expected):
    assert bool(jnp.all(jnp.isfinite(a))), f"{name} has non-finite values"
    error = relative_error(a, e)
    assert error <= bound, f"{name}: relative error {error:.2e} > {bound:.0e}"
