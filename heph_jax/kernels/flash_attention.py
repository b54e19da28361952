"""Fused (flash) attention as a Pallas TPU kernel, with a plain-jnp reference beside it.

    flash_attention(q, k, v, segment_ids=None, *, causal=True, sm_scale=None, block_sizes=None,
                    interpret=None)

q [B, S, H, D]; k and v [B, S, KV, D] with H a multiple of KV (grouped-query attention: each kv
head serves H/KV query heads straight from HBM, never repeated). segment_ids [B, S] int32 (>= 0):
a token attends only to tokens with the same id (0, the padding id, included, as in the XLA path).
The forward is an online softmax that skips causal blocks above the diagonal; the backward is a
jax.custom_vjp with Pallas kernels for dq and for dk/dv that reuse the forward's log-sum-exp.
bfloat16 inputs accumulate in float32.

interpret=None runs the Mosaic kernel when lowered for TPU and Pallas interpret mode (plain XLA)
on any other backend; True/False (or a pltpu.InterpretParams) force one or the other.

Sequences that are not a multiple of the blocks are padded inside (padded keys get a segment id
that matches no real token) and sliced back. The kernels themselves are in flash_attention_kernels.py.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp

from . import flash_attention_kernels as kernels

LANES = 128  # TPU vreg lanes: a tile's sequence block must be a multiple of this unless it spans all
SUBLANES = 8
_PAD_SEGMENT = int(jnp.iinfo(jnp.int32).min)  # never equal to a real (non-negative) segment id


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Sequence tile sizes of the three kernels. Each must be a positive multiple of 128.

  Sequences shorter than a block use one block covering the (8-padded) sequence instead.
  """
  block_q: int = 128
  block_k: int = 128
  block_q_dq: int = 128
  block_k_dq: int = 128
  block_q_dkv: int = 128
  block_k_dkv: int = 128

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value % LANES:
        raise ValueError(f"BlockSizes.{field.name} must be a positive multiple of {LANES} "
                         f"(TPU lane width), got {value!r}")

  def values(self):
    return tuple(getattr(self, field.name) for field in dataclasses.fields(self))


@dataclasses.dataclass(frozen=True)
class _Plan:
  """Everything static about one call: padded length, effective blocks, layout, numerics."""
  layout: kernels.Layout
  blocks: tuple  # effective BlockSizes.values()
  causal: bool
  sm_scale: float
  interpret: object


def _round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple


def _plan_blocks(seq: int, block_sizes: BlockSizes):
  """(padded_seq, effective blocks). Blocks larger than the sequence shrink to one full block."""
  whole = _round_up(seq, SUBLANES) if seq <= LANES else _round_up(seq, LANES)
  blocks = tuple(min(b, whole) for b in block_sizes.values())
  padded = _round_up(seq, math.lcm(*blocks))
  return padded, blocks


def _check_inputs(q, k, v, segment_ids):
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f"flash_attention: q, k, v must be rank 4 ([B, S, H, D] / [B, S, KV, D]), got "
                     f"shapes {q.shape}, {k.shape}, {v.shape}")
  batch, seq, heads, head_dim = q.shape
  if k.shape != v.shape:
    raise ValueError(f"flash_attention: k and v shapes differ: {k.shape} vs {v.shape}")
  if k.shape[0] != batch or k.shape[1] != seq or k.shape[3] != head_dim:
    raise ValueError(f"flash_attention: k/v {k.shape} must be [B={batch}, S={seq}, KV, D={head_dim}] "
                     f"to match q {q.shape}")
  if heads % k.shape[2]:
    raise ValueError(f"flash_attention: query heads ({heads}) must be a multiple of kv heads "
                     f"({k.shape[2]})")
  if not (q.dtype == k.dtype == v.dtype):
    raise ValueError(f"flash_attention: q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
  if segment_ids is not None:
    if segment_ids.shape != (batch, seq):
      raise ValueError(f"flash_attention: segment_ids shape {segment_ids.shape} must be [B, S] = "
                       f"{(batch, seq)}")
    if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
      raise ValueError(f"flash_attention: segment_ids must be integers, got {segment_ids.dtype}")


def _to_kernel_layout(x, fused: bool):
  batch, seq, heads, head_dim = x.shape
  if fused:
    return x.reshape(batch, seq, heads * head_dim)  # free: same memory order
  return x.transpose(0, 2, 1, 3)  # [B, H, S, D]


def _from_kernel_layout(x, fused: bool, heads: int):
  if fused:
    return x.reshape(x.shape[0], x.shape[1], heads, -1)
  return x.transpose(0, 2, 1, 3)


def flash_attention(q, k, v, segment_ids=None, *, causal: bool = True,
                    sm_scale: Optional[float] = None, block_sizes: Optional[BlockSizes] = None,
                    interpret=None):
  """Softmax attention of q [B, S, H, D] over k, v [B, S, KV, D]; returns [B, S, H, D] like q."""
  _check_inputs(q, k, v, segment_ids)
  batch, seq, heads, head_dim = q.shape
  kv_heads = k.shape[2]
  if block_sizes is None:
    block_sizes = BlockSizes()
  elif not isinstance(block_sizes, BlockSizes):
    raise ValueError(f"flash_attention: block_sizes must be a BlockSizes, got {type(block_sizes)}")
  sm_scale = float(head_dim ** -0.5 if sm_scale is None else sm_scale)
  padded, blocks = _plan_blocks(seq, block_sizes)

  pad = padded - seq
  if pad:
    widths = ((0, 0), (0, pad), (0, 0), (0, 0))
    q, k, v = (jnp.pad(x, widths) for x in (q, k, v))
    if segment_ids is None and not causal:
      segment_ids = jnp.zeros((batch, seq), jnp.int32)  # causal masking already hides padded keys
    if segment_ids is not None:
      segment_ids = jnp.pad(segment_ids.astype(jnp.int32), ((0, 0), (0, pad)),
                            constant_values=_PAD_SEGMENT)
  segments = None if segment_ids is None else segment_ids.astype(jnp.int32)[:, None, :]

  fused = head_dim % LANES == 0
  layout = kernels.Layout(fused=fused, batch=batch, seq=padded, heads=heads, kv_heads=kv_heads,
                          head_dim=head_dim)
  plan = _Plan(layout=layout, blocks=blocks, causal=bool(causal), sm_scale=sm_scale,
               interpret=interpret)
  out = _flash(plan, _to_kernel_layout(q, fused), _to_kernel_layout(k, fused),
               _to_kernel_layout(v, fused), segments)
  return _from_kernel_layout(out, fused, heads)[:, :seq]


# ---- custom VJP over kernel-layout operands ----------------------------------------------------

def _forward(plan: _Plan, q, k, v, segments):
  block_q, block_k = plan.blocks[0], plan.blocks[1]
  return kernels.forward(q, k, v, segments, layout=plan.layout, causal=plan.causal,
                         sm_scale=plan.sm_scale, block_q=block_q, block_k=block_k,
                         interpret=plan.interpret)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(plan: _Plan, q, k, v, segments):
  return _forward(plan, q, k, v, segments)[0]


def _flash_fwd(plan: _Plan, q, k, v, segments):
  o, lse = _forward(plan, q, k, v, segments)
  return o, (q, k, v, segments, o, lse)


def _row_dot(layout: kernels.Layout, o, do):
  """di = sum_d o * do in float32, as [B, H, 1, S] rows."""
  prod = o.astype(jnp.float32) * do.astype(jnp.float32)
  if layout.fused:
    di = prod.reshape(layout.batch, layout.seq, layout.heads, layout.head_dim).sum(-1)
    di = di.transpose(0, 2, 1)
  else:
    di = prod.sum(-1)
  return di[:, :, None, :]


def _flash_bwd(plan: _Plan, residuals, do):
  q, k, v, segments, o, lse = residuals
  do = do.astype(q.dtype)
  di = _row_dot(plan.layout, o, do)
  common = dict(layout=plan.layout, causal=plan.causal, sm_scale=plan.sm_scale,
                interpret=plan.interpret)
  _, _, block_q_dq, block_k_dq, block_q_dkv, block_k_dkv = plan.blocks
  dq = kernels.backward_dq(q, k, v, segments, do, lse, di, block_q=block_q_dq, block_k=block_k_dq,
                           **common)
  dk, dv = kernels.backward_dkv(q, k, v, segments, do, lse, di, block_q=block_q_dkv,
                                block_k=block_k_dkv, **common)
  return dq, dk, dv, None


_flash.defvjp(_flash_fwd, _flash_bwd)


# ---- reference ---------------------------------------------------------------------------------

def mha_reference(q, k, v, segment_ids=None, *, causal: bool = True,
                  sm_scale: Optional[float] = None, block_sizes=None, interpret=None):
  """Plain-jnp attention with flash_attention's signature and masking (block_sizes, interpret unused)."""
  del block_sizes, interpret
  _check_inputs(q, k, v, segment_ids)
  batch, seq, heads, head_dim = q.shape
  kv_heads = k.shape[2]
  sm_scale = head_dim ** -0.5 if sm_scale is None else sm_scale
  # Every query head h reads kv head h // (H / KV).
  k_full = jnp.repeat(k, heads // kv_heads, axis=2).astype(jnp.float32)
  v_full = jnp.repeat(v, heads // kv_heads, axis=2).astype(jnp.float32)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k_full) * sm_scale
  allowed = jnp.ones((batch, 1, seq, seq), bool)
  if causal:
    allowed &= jnp.arange(seq)[:, None] >= jnp.arange(seq)[None, :]
  if segment_ids is not None:
    allowed &= (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]
  logits = jnp.where(allowed, logits, -jnp.inf)
  probs = jax.nn.softmax(logits, axis=-1)  # every row allows at least its own position
  return jnp.einsum("bhqk,bkhd->bqhd", probs, v_full).astype(q.dtype)
