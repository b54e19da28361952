"""Fused (flash) attention as a Pallas TPU kernel, with a plain-jnp reference beside it.

    flash_attention(q, k, v, segment_ids=None, *, causal=True, sm_scale=None, block_sizes=None,
                    interpret=None)

q [B, S, H, D]; k and v [B, S, KV, D] with H a multiple of KV (grouped-query attention: each kv
head serves H/KV query heads straight from HBM, never repeated). segment_ids [B, S] int32 (>= 0):
a token attends only to tokens with the same id (0, the padding id, included, as in the XLA path).
The forward is an online softmax that skips the blocks no query may attend to: above the causal
diagonal and, with segment ids, across documents (packed rows); the backward is a jax.custom_vjp
with Pallas kernels for dq and for dk/dv that reuse the forward's log-sum-exp and skip the same way.
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

from heph_jax.errors import ConfigError

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


# Default blocks per TPU generation (jax device_kind), as BlockSizes fields: (block_q, block_k) of the
# forward, the dq and the dk/dv kernel. Larger tiles amortise the ~0.35 us per grid step and feed the
# MXU longer; smaller ones skip packed documents at a finer grain (a 512-token document in 512-row
# blocks skips every cross-document block) and leave VMEM for double buffering. Assumed values
# (the ones MaxText's splash attention uses, 512, with longer key blocks where the MXU is 256 wide
# (v6e) or VMEM is larger (v4/v5p)): none has been timed on a chip here (benchmarks/device_check.sh
# does that when one is lent). Other backends (GPU, interpret mode) keep the 128 minimum.
GENERATION_BLOCKS = {
    "TPU v4": (512, 1024, 512, 512, 512, 512),
    "TPU v5 lite": (512, 512, 512, 512, 512, 512),
    "TPU v5": (512, 1024, 512, 512, 512, 512),
    "TPU v6 lite": (512, 1024, 512, 1024, 1024, 512),
}
# Mosaic's default scoped VMEM (16 MiB on v5e, the smallest): a block choice whose estimate passes
# this fits every generation without raising the compiler's limit.
SCOPED_VMEM_BYTES = 16 * 2 ** 20


def default_block_sizes(device_kind: str) -> "BlockSizes":
  return BlockSizes(*GENERATION_BLOCKS.get(device_kind, (LANES,) * 6))


def vmem_bytes(blocks: "BlockSizes", head_dim: int, itemsize: int) -> int:
  """Estimated VMEM of the largest of the three kernels: double-buffered tiles, float32 scratch and
  two float32 [block_q, block_k] temporaries (scores, probabilities; Mosaic reuses the others)."""
  fwd_q, fwd_k, dq_q, dq_k, dkv_q, dkv_k = blocks.values()
  tiles = {  # (rows of q-sized tiles, rows of k-sized tiles, float32 scratch rows)
      "forward": (2 * fwd_q, 2 * fwd_k, fwd_q, fwd_q, fwd_k),
      "dq": (3 * dq_q, 2 * dq_k, dq_q, dq_q, dq_k),
      "dkv": (2 * dkv_q, 4 * dkv_k, 2 * dkv_k, dkv_q, dkv_k),
  }
  return max(2 * (q_rows + k_rows) * head_dim * itemsize + scratch * head_dim * 4 + 2 * bq * bk * 4
             for q_rows, k_rows, scratch, bq, bk in tiles.values())


def resolve_block_sizes(values, *, device_kind: str, seq_len: int, head_dim: int, itemsize: int = 2,
                        key: str = "model.attention_block_sizes") -> "BlockSizes":
  """The block sizes a run uses: `values` () = the generation's default (each halved, down to 128,
  until it divides seq_len); 2 ints = (block_q, block_k) for all three kernels; 6 ints = the
  BlockSizes fields. Raises ConfigError naming `key` for a block that is not a multiple of 128,
  does not divide seq_len (every row would be padded), or overflows VMEM at this head_dim."""
  values = tuple(values or ())
  if not values:
    blocks = list(default_block_sizes(device_kind).values())
    for n, block in enumerate(blocks):
      while block > LANES and seq_len > block and seq_len % block:
        block //= 2
      blocks[n] = block
    return BlockSizes(*blocks)
  if len(values) == 2:
    values = values * 3
  if len(values) != 6:
    raise ConfigError(f"config.{key}: give () for the TPU generation's default, 2 ints (block_q, "
                      f"block_k) or 6 (forward, dq, dk/dv pairs), got {values!r}")
  try:
    blocks = BlockSizes(*values)
  except ValueError as e:
    raise ConfigError(f"config.{key}: {e}") from None
  for name, block in zip(("block_q", "block_k", "block_q_dq", "block_k_dq", "block_q_dkv",
                          "block_k_dkv"), blocks.values()):
    if seq_len > block and seq_len % block:
      raise ConfigError(f"config.{key}: {name}={block} does not divide seq_len={seq_len}; every row "
                        "would be padded to a multiple of it (use a power of two)")
  needed = vmem_bytes(blocks, head_dim, itemsize)
  if needed > SCOPED_VMEM_BYTES:
    raise ConfigError(f"config.{key}: {values} need about {needed / 2 ** 20:.1f} MiB of VMEM at "
                      f"head_dim={head_dim}, over the {SCOPED_VMEM_BYTES // 2 ** 20} MiB Mosaic gives a "
                      "kernel by default; use smaller blocks")
  return blocks


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


def computed_blocks(q, k, v, segment_ids=None, *, causal: bool = True,
                    block_sizes: Optional[BlockSizes] = None) -> dict:
  """How many (query block, key block) tiles each kernel computes for these inputs, counted by the
  kernels themselves (their count outputs, interpret mode, any backend): {"forward", "dq", "dkv",
  "total", "grid"}; "grid" is the number of tiles of the full square, over all heads."""
  _check_inputs(q, k, v, segment_ids)
  batch, seq, heads, head_dim = q.shape
  padded, blocks = _plan_blocks(seq, block_sizes or BlockSizes())
  widths = ((0, 0), (0, padded - seq), (0, 0), (0, 0))
  q, k, v = (jnp.pad(x, widths) for x in (q, k, v))
  segments = None
  if segment_ids is not None:
    segments = jnp.pad(segment_ids.astype(jnp.int32), ((0, 0), (0, padded - seq)),
                       constant_values=_PAD_SEGMENT)[:, None, :]
  fused = head_dim % LANES == 0
  layout = kernels.Layout(fused=fused, batch=batch, seq=padded, heads=heads, kv_heads=k.shape[2],
                          head_dim=head_dim)
  q, k, v = (_to_kernel_layout(x, fused) for x in (q, k, v))
  lse = di = jnp.zeros((batch, heads, 1, padded), jnp.float32)
  common = dict(layout=layout, causal=bool(causal), sm_scale=1.0, interpret=True, count=True)
  fwd_q, fwd_k, dq_q, dq_k, dkv_q, dkv_k = blocks
  counts = {
      "forward": (kernels.forward(q, k, v, segments, block_q=fwd_q, block_k=fwd_k, **common)[2],
                  fwd_q),
      "dq": (kernels.backward_dq(q, k, v, segments, q, lse, di, block_q=dq_q, block_k=dq_k,
                                 **common)[1], dq_q),
      "dkv": (kernels.backward_dkv(q, k, v, segments, q, lse, di, block_q=dkv_q, block_k=dkv_k,
                                   **common)[2], dkv_k),
  }
  # Each row of blocks wrote its count into all its lanes: read one lane per block.
  out = {name: int(jnp.sum(rows[..., ::block])) for name, (rows, block) in counts.items()}
  out["total"] = out["forward"] + out["dq"] + out["dkv"]
  out["grid"] = batch * heads * (padded // fwd_q) * (padded // fwd_k)
  return out


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
