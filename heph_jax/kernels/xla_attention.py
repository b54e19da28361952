"""XLA attention: plain jnp blocked attention with a hand-written flash-attention backward, for any
backend (the default `impl="xla"` of heph_jax.model.attention, and the reference the fused kernels
are benchmarked against).

Shapes: q [B, S, H, D], k and v [B, S, KV, D] with H a multiple of KV (grouped-query attention:
the kv heads are never repeated in memory). segment_ids [B, S] int32: tokens attend only within
their own segment; 0 marks padding.
"""
import functools

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
  kv_heads = k.shape[2]
  groups = heads // kv_heads
  sm_scale = head_dim ** -0.5 if sm_scale is None else sm_scale
  # Heads-major [B, KV, G, S, D] / [B, KV, S, D]: each head's scores are then one plain batched
  # matmul, which XLA:CPU runs without the transposing copies the [B, S, H, D] einsum needs.
  q = q.reshape(batch, seq, kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
  k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
  block = (causal_block or max(MIN_CAUSAL_BLOCK, -(-seq // CAUSAL_BLOCKS))) if causal else seq
  out = _blocked_attention(q, k, v, segment_ids, block, causal, float(sm_scale))
  return out.transpose(0, 3, 1, 2, 4).reshape(batch, seq, heads, head_dim)


# Blocked attention with a hand-written backward (the flash-attention recurrence, in plain jnp):
# the forward keeps only the output and each row's log-sum-exp, and the backward recomputes one
# block's probabilities at a time from them. Against autodiff through softmax this makes fewer
# passes over the [rows, keys] probabilities and keeps residuals of [S] per head, not [S, S]
# (4-7 % faster train step on CPU, half the temporaries: benchmarks/README.md).

def _query_blocks(seq, kv_len, block, causal):
  """(start, end, keys) per query block; rows start:end see keys :keys (later ones are masked)."""
  for start in range(0, seq, block):
    end = min(start + block, seq)
    yield start, end, (min(end, kv_len) if causal else kv_len)


def _masked_scores(q, k, segment_ids, start, end, keys, causal, sm_scale):
  """float32 scores [B, KV, G, end-start, keys], masked entries at _MASK_VALUE."""
  scores = jnp.einsum("bkgqd,bksd->bkgqs", q[:, :, :, start:end], k[:, :, :keys],
                      preferred_element_type=jnp.float32) * sm_scale
  mask = None
  if causal:
    mask = (jnp.arange(start, end)[:, None] >= jnp.arange(keys)[None, :])[None, None, None]
  if segment_ids is not None:
    same = (segment_ids[:, start:end, None] == segment_ids[:, None, :keys])[:, None, None]
    mask = same if mask is None else mask & same
  return scores if mask is None else jnp.where(mask, scores, _MASK_VALUE)


def _concat_rows(blocks):
  return blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _blocked_attention(q, k, v, segment_ids, block, causal, sm_scale):
  return _forward(q, k, v, segment_ids, block, causal, sm_scale)[0]


def _forward(q, k, v, segment_ids, block, causal, sm_scale):
  """(out [B, KV, G, S, D] in q's dtype, log-sum-exp [B, KV, G, S, 1] float32)."""
  outs, lses = [], []
  for start, end, keys in _query_blocks(q.shape[3], k.shape[2], block, causal):
    scores = _masked_scores(q, k, segment_ids, start, end, keys, causal, sm_scale)
    row_max = jnp.max(scores, axis=-1, keepdims=True)
    unnormalized = jnp.exp(scores - row_max)
    row_sum = jnp.sum(unnormalized, axis=-1, keepdims=True)
    out = jnp.einsum("bkgqs,bksd->bkgqd", unnormalized.astype(v.dtype), v[:, :, :keys],
                     preferred_element_type=jnp.float32) / row_sum
    outs.append(out.astype(q.dtype))
    lses.append(row_max + jnp.log(row_sum))
  return _concat_rows(outs), _concat_rows(lses)


def _forward_with_residuals(q, k, v, segment_ids, block, causal, sm_scale):
  out, lse = _forward(q, k, v, segment_ids, block, causal, sm_scale)
  return out, (q, k, v, segment_ids, out, lse)


def _backward(block, causal, sm_scale, residuals, d_out):
  q, k, v, segment_ids, out, lse = residuals
  # delta = rowsum(dO * O) = rowsum(dP * P): the softmax backward's per-row term, at [S] cost.
  delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
  dk = jnp.zeros(k.shape, jnp.float32)
  dv = jnp.zeros(v.shape, jnp.float32)
  dqs = []
  for start, end, keys in _query_blocks(q.shape[3], k.shape[2], block, causal):
    scores = _masked_scores(q, k, segment_ids, start, end, keys, causal, sm_scale)
    probs = jnp.exp(scores - lse[:, :, :, start:end])  # masked entries give exactly 0
    d_out_rows = d_out[:, :, :, start:end]
    dv = dv.at[:, :, :keys].add(jnp.einsum("bkgqs,bkgqd->bksd", probs.astype(d_out.dtype), d_out_rows,
                                           preferred_element_type=jnp.float32))
    d_probs = jnp.einsum("bkgqd,bksd->bkgqs", d_out_rows, v[:, :, :keys],
                         preferred_element_type=jnp.float32)
    d_scores = (probs * (d_probs - delta[:, :, :, start:end]) * sm_scale).astype(q.dtype)
    dqs.append(jnp.einsum("bkgqs,bksd->bkgqd", d_scores, k[:, :, :keys],
                          preferred_element_type=jnp.float32).astype(q.dtype))
    dk = dk.at[:, :, :keys].add(jnp.einsum("bkgqs,bkgqd->bksd", d_scores, q[:, :, :, start:end],
                                           preferred_element_type=jnp.float32))
  return _concat_rows(dqs), dk.astype(k.dtype), dv.astype(v.dtype), None


_blocked_attention.defvjp(_forward_with_residuals, _backward)
