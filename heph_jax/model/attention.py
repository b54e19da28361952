"""Attention dispatch: `impl="xla"` (blocked jnp attention, any backend), `impl="pallas"` (fused
kernel for TPU/GPU) or `impl="cpu"` (fused C++ kernel for XLA:CPU). The kernels live in
heph_jax/kernels/; under a mesh the fused ones run per shard (heph_jax/parallel/per_shard.py).

Shapes: q [B, S, H, D], k and v [B, S, KV, D] with H a multiple of KV (grouped-query attention:
the kv heads are never repeated in memory). segment_ids [B, S] int32: tokens attend only within
their own segment; 0 marks padding.
"""
from heph_jax.kernels.xla_attention import xla_attention


def pallas_attention(q, k, v, segment_ids=None, causal=True, sm_scale=None, block_sizes=None):
  """q [B, S, H, D], k/v [B, S, KV, D] (RoPE applied), segment_ids [B, S] -> [B, S, H, D]."""
  from heph_jax.kernels.flash_attention import flash_attention  # kernels load only when asked for
  from heph_jax.parallel.per_shard import per_shard

  def attend(q, k, v, segment_ids):
    return flash_attention(q, k, v, segment_ids, causal=causal, sm_scale=sm_scale,
                           block_sizes=block_sizes)
  return per_shard(attend, q, k, v, segment_ids)


def cpu_attention(q, k, v, segment_ids=None, causal=True, sm_scale=None):
  """As pallas_attention, with the C++ kernel for XLA:CPU."""
  from heph_jax.kernels.cpu_attention import cpu_attention as kernel
  from heph_jax.parallel.per_shard import per_shard

  def attend(q, k, v, segment_ids):
    return kernel(q, k, v, segment_ids, causal=causal, sm_scale=sm_scale)
  return per_shard(attend, q, k, v, segment_ids)


def attention(q, k, v, segment_ids=None, *, impl="xla", causal=True, sm_scale=None, block_sizes=()):
  """block_sizes (pallas only): () = the kernel's 128 minimum (a run resolves the TPU generation's
  default in training/build.py), (block_q, block_k), or the six BlockSizes fields."""
  if impl == "xla":
    return xla_attention(q, k, v, segment_ids, causal=causal, sm_scale=sm_scale)
  if impl == "pallas":
    blocks = None
    if block_sizes:
      from heph_jax.kernels.flash_attention import BlockSizes
      blocks = BlockSizes(*(tuple(block_sizes) * 3 if len(block_sizes) == 2 else block_sizes))
    return pallas_attention(q, k, v, segment_ids, causal=causal, sm_scale=sm_scale, block_sizes=blocks)
  if impl == "cpu":
    return cpu_attention(q, k, v, segment_ids, causal=causal, sm_scale=sm_scale)
  raise ValueError(f"unknown attention impl {impl!r}; expected 'xla', 'pallas' or 'cpu'")
