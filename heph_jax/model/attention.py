"""Attention dispatch: `impl="xla"` (plain jnp, any backend) or `impl="pallas"` (fused kernel).

Shapes: q [B, S, H, D], k and v [B, S, KV, D] with H a multiple of KV (grouped-query attention:
the kv heads are never repeated in memory). segment_ids [B, S] int32: tokens attend only within
their own segment; 0 marks padding.
"""
import jax
import jax.numpy as jnp

_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)  # finite: fully masked rows stay NaN-free


# Causal attention runs in (at most) this many query blocks: block i only scores the keys up to
# its last row, which skips most of the masked upper triangle (8 blocks score 9/16 of the full
# matrix) and keeps each block's scores small. Measured on XLA:CPU: benchmarks/README.md.
CAUSAL_BLOCKS = 8
MIN_CAUSAL_BLOCK = 64  # rows; shorter sequences run as one block


def xla_attention(q, k, v, segment_ids=None, *, causal=True, sm_scale=None, causal_block=None):
  batch, seq, heads, head_dim = q.shape
  kv_len, kv_heads = k.shape[1], k.shape[2]
  groups = heads // kv_heads
  sm_scale = head_dim ** -0.5 if sm_scale is None else sm_scale
  # Heads-major [B, KV, G, S, D] / [B, KV, S, D]: each head's scores are then one plain batched
  # matmul, which XLA:CPU runs without the transposing copies the [B, S, H, D] einsum needs.
  q = q.reshape(batch, seq, kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
  k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
  step = causal_block or max(MIN_CAUSAL_BLOCK, -(-seq // CAUSAL_BLOCKS))
  step = step if causal else seq
  outs = []
  for start in range(0, seq, step):
    end = min(start + step, seq)
    keys = min(end, kv_len) if causal else kv_len  # later keys are all masked for these rows
    scores = jnp.einsum("bkgqd,bksd->bkgqs", q[:, :, :, start:end], k[:, :, :keys],
                        preferred_element_type=jnp.float32) * sm_scale
    mask = None
    if causal:
      mask = (jnp.arange(start, end)[:, None] >= jnp.arange(keys)[None, :])[None, None, None]
    if segment_ids is not None:
      same = segment_ids[:, start:end, None] == segment_ids[:, None, :keys]
      same = same[:, None, None]  # [B, 1, 1, Sq, Sk]
      mask = same if mask is None else mask & same
    if mask is not None:
      scores = jnp.where(mask, scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    outs.append(jnp.einsum("bkgqs,bksd->bkgqd", probs, v[:, :, :keys]))
  out = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=3)  # [B, KV, G, S, D]
  return out.transpose(0, 3, 1, 2, 4).reshape(batch, seq, heads, head_dim)


def attention(q, k, v, segment_ids=None, *, impl="xla", causal=True, sm_scale=None):
  if impl == "xla":
    return xla_attention(q, k, v, segment_ids, causal=causal, sm_scale=sm_scale)
  if impl == "pallas":
    from heph_jax.model.attention_pallas import pallas_attention  # kernels load only when asked for
    return pallas_attention(q, k, v, segment_ids, causal=causal, sm_scale=sm_scale)
  raise ValueError(f"unknown attention impl {impl!r}; expected 'xla' or 'pallas'")
