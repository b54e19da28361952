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


def assert_remat_invariant(attend, policy):
  """Gradients through attend(q, k, v, segment_ids) are the same with the layer under
  jax.checkpoint(policy) as without (the model wraps each layer that way)."""
  rng = np.random.default_rng(2)
  q, k, v, cotangent = attention_inputs(11, 2, 150, 4, 2, 16)
  segment_ids = random_segments(rng, 2, 150)

  def loss(q, k, v):
    return jnp.sum(attend(jnp.sin(q), k * 2.0, v, segment_ids) * cotangent)

  plain = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
  rematted = jax.grad(jax.checkpoint(loss, policy=policy), argnums=(0, 1, 2))(q, k, v)
  for a, e in zip(rematted, plain):
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-6, atol=1e-6)


def sharded_value_and_grads(impl, seed, batch, seq, heads, kv_heads, head_dim):
  """(actual, expected, lowered HLO text): the model's attention dispatch with `impl` under
  jax.set_mesh on a 2x2x2 mesh of the 8 CPU devices, inputs sharded as the model shards them,
  against mha_reference unsharded."""
  from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
  from heph_jax.kernels.flash_attention import mha_reference
  from heph_jax.model.attention import attention

  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
  q, k, v, cotangent = attention_inputs(seed, batch, seq, heads, kv_heads, head_dim)
  segment_ids = random_segments(np.random.default_rng(seed), batch, seq)
  tiles = NamedSharding(mesh, P(("data", "fsdp"), None, "tensor", None))
  rows = NamedSharding(mesh, P(("data", "fsdp"), None))
  dispatched = lambda q, k, v, s: attention(q, k, v, s, impl=impl, causal=True)
  with jax.set_mesh(mesh):
    args = [jax.device_put(x, tiles) for x in (q, k, v)] + [jax.device_put(segment_ids, rows)]
    actual = value_and_grads(dispatched, *args, jax.device_put(cotangent, tiles))
    lowered = jax.jit(dispatched).lower(*args).as_text()
  expected = value_and_grads(mha_reference, q, k, v, segment_ids, cotangent)
  return actual, expected, lowered
