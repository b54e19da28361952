"""Attention dispatch: `impl="xla"` (plain jnp, any backend) or `impl="pallas"` (fused kernel).

Shapes: q [B, S, H, D], k and v [B, S, KV, D] with H a multiple of KV (grouped-query attention:
the kv heads are never repeated in memory). segment_ids [B, S] int32: tokens attend only within
their own segment; 0 marks padding.
"""
import jax
import jax.numpy as jnp

_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)  # finite: fully masked rows stay NaN-free


def xla_attention(q, k, v, segment_ids=None, *, causal=True, sm_scale=None):
  batch, seq, heads, head_dim = q.shape
  kv_heads = k.shape[2]
  groups = heads // kv_heads
  sm_scale = head_dim ** -0.5 if sm_scale is None else sm_scale
  q = q.reshape(batch, seq, kv_heads, groups, head_dim)
  scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k, preferred_element_type=jnp.float32) * sm_scale
  mask = None
  if causal:
    mask = jnp.tril(jnp.ones((seq, k.shape[1]), dtype=bool))[None, None, None]
  if segment_ids is not None:
    same = (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None, None]  # [B,1,1,Sq,Sk]
    mask = same if mask is None else mask & same
  if mask is not None:
    scores = jnp.where(mask, scores, _MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v)
  return out.reshape(batch, seq, heads, head_dim)


def attention(q, k, v, segment_ids=None, *, impl="xla", causal=True, sm_scale=None):
  if impl == "xla":
    return xla_attention(q, k, v, segment_ids, causal=causal, sm_scale=sm_scale)
  if impl == "pallas":
    from heph_jax.model.attention_pallas import pallas_attention  # kernels load only when asked for
    return pallas_attention(q, k, v, segment_ids, causal=causal, sm_scale=sm_scale)
  raise ValueError(f"unknown attention impl {impl!r}; expected 'xla' or 'pallas'")
