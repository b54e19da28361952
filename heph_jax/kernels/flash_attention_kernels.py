"""Pallas TPU kernels of flash attention: forward, dq and dk/dv (the public API is flash_attention.py).

Every kernel sees 2-D tiles: a block of rows of one head ([block, head_dim]) and, per row block,
one lane-dense row of softmax statistics or segment ids ([1, block]). Two HBM layouts are supported,
chosen by `Layout.fused`:

  fused  (head_dim % 128 == 0): q [B, S, H*D]; the tile of head h is the lane block h. This is the
         model's [B, S, H, D] with a free reshape, so no transpose ever touches HBM.
  heads  (any head_dim): q [B, H, S, D]; the tile of head h is [None, h, block, :].

The log-sum-exp `lse` and `di = rowsum(o * do)` are [B, H, 1, S] float32 (lane-dense rows). Segment
ids are [B, 1, S] int32. Matmuls take the input dtype and accumulate in float32.

Grids (the last axes are the sequential reductions):
  forward, dq: (B, H, S/block_q, S/block_k); kv head = h // group.
  dk/dv:       (B, KV, S/block_k, group, S/block_q); dk, dv sum over the group's query heads.
A block is computed only when some query of it may attend to some key of it: causally (not
strictly above the diagonal) and, with segment ids, by segment (the ranges [min, max] of the ids in
the query block and in the key block overlap). Packed rows of many short documents leave most of the
causal triangle to cross-document blocks, which are skipped. The per-block ranges (padding kept
apart) and, per query block (per key block for dk/dv), the first and last block it needs are computed once per call in
plain XLA (`block_skipping.schedule`) and reach the kernels and their index maps by scalar prefetch (SMEM). The
index maps clamp the reduction index into that [first, last] window, so a skipped step repeats the
block the previous or next computed step uses and the pipeline issues no DMA for it. Only blocks that
straddle the diagonal build a causal mask.

`count=True` adds an output: how many blocks each kernel instance computed (tests, benchmarks).
"""
from __future__ import annotations

import dataclasses
import functools
import typing

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from .block_skipping import SCHEDULE_FIELDS, schedule
from .block_skipping import Skip as _Skip
from .block_skipping import block_mask as _mask

# Finite, so a row with nothing to attend to in a block never makes exp(-inf - -inf) = NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
_NT = (((1,), (1,)), ((), ()))  # contract the last dims: a @ b.T


@dataclasses.dataclass(frozen=True)
class Layout:
  """Static description of the kernels' operands (see the module docstring)."""
  fused: bool
  batch: int
  seq: int  # padded to a multiple of every block size
  heads: int
  kv_heads: int
  head_dim: int

  @property
  def group(self) -> int:
    return self.heads // self.kv_heads

  def tile_spec(self, block: int, index):
    """BlockSpec of a [block, head_dim] tile; `index(*grid_ids)` returns (batch, head, seq_block)."""
    if self.fused:
      def index_map(*ids):
        b, h, s = index(*ids)
        return b, s, h
      return pl.BlockSpec((None, block, self.head_dim), index_map)

    def index_map(*ids):
      b, h, s = index(*ids)
      return b, h, s, 0
    return pl.BlockSpec((None, None, block, self.head_dim), index_map)

  def tile_shape(self, heads: int, dtype):
    if self.fused:
      return jax.ShapeDtypeStruct((self.batch, self.seq, heads * self.head_dim), dtype)
    return jax.ShapeDtypeStruct((self.batch, heads, self.seq, self.head_dim), dtype)


def _row_spec(block: int, index):
  """BlockSpec of a [1, block] row of a [B, H, 1, S] statistics array."""
  def index_map(*ids):
    b, h, s = index(*ids)
    return b, h, 0, s
  return pl.BlockSpec((None, None, 1, block), index_map)


def _segment_spec(block: int, index):
  """BlockSpec of a [1, block] row of the [B, 1, S] segment ids."""
  def index_map(*ids):
    b, s = index(*ids)
    return b, 0, s
  return pl.BlockSpec((None, 1, block), index_map)


def _compiler_params(semantics):
  return pltpu.CompilerParams(dimension_semantics=semantics)


def _call(kernel, *, grid, num_prefetch, in_specs, out_specs, out_shape, scratch_shapes, semantics,
          cost, interpret, name):
  """pallas_call that lowers to Mosaic on TPU and to interpret mode elsewhere when interpret is None."""
  grid_spec = pltpu.PrefetchScalarGridSpec(num_scalar_prefetch=num_prefetch, grid=grid,
                                           in_specs=in_specs, out_specs=out_specs,
                                           scratch_shapes=scratch_shapes)

  def build(interpret_mode):
    return pl.pallas_call(kernel, out_shape=out_shape, grid_spec=grid_spec,
                          compiler_params=_compiler_params(semantics), cost_estimate=cost,
                          interpret=interpret_mode, name=name)

  if interpret is not None:
    return build(interpret)

  def run(*args):
    return lax.platform_dependent(*args, tpu=build(False), default=build(True))
  return run


class _Refs:
  """Splits a kernel's refs: schedule (scalar prefetch), segment ids, the kernel's own operands,
  and the block counter (output and SMEM scratch) of count mode."""

  def __init__(self, refs, has_segments, count, num_scratch):
    refs = list(refs)
    self.sched = tuple(refs[:len(SCHEDULE_FIELDS)]) if has_segments else None
    refs = refs[len(SCHEDULE_FIELDS):] if has_segments else refs
    self.seg_q, self.seg_k = (refs[0], refs[1]) if has_segments else (None, None)
    refs = refs[2:] if has_segments else refs
    self.count_out = self.counter = None
    if count:
      self.counter = refs.pop()  # last scratch
      self.count_out = refs.pop(len(refs) - num_scratch - 1)  # last output
    self.operands = refs


def _grid_index(num_grid, fn):
  """An index map from fn(grid ids, schedule refs or None) (scalar-prefetch refs trail the ids)."""
  return lambda *args: fn(args[:num_grid], args[num_grid:] or None)


def _count_spec(block, num_grid, index):
  """[1, block] int32 row of a count output shaped like lse ([B, heads, 1, S])."""
  return _row_spec(block, _grid_index(num_grid, index))


def _count_parts(count, layout, heads, block, num_grid, index):
  if not count:
    return [], [], []
  return ([_count_spec(block, num_grid, index)],
          [jax.ShapeDtypeStruct((layout.batch, heads, 1, layout.seq), jnp.int32)],
          [pltpu.SMEM((1,), jnp.int32)])


def _segment_inputs(segment_ids, sched, num_grid, block_q, block_k, q_seq, k_seq):
  """(prefetch args, segment in_specs, segment args); q_seq/k_seq(ids, sched) -> (b, seq block)."""
  if segment_ids is None:
    return [], [], []
  specs = [_segment_spec(block_q, _grid_index(num_grid, q_seq)),
           _segment_spec(block_k, _grid_index(num_grid, k_seq))]
  return list(sched), specs, [segment_ids, segment_ids]


# ---- forward -----------------------------------------------------------------------------------

def _forward_kernel(*refs, skip, sm_scale, has_segments, count):
  r = _Refs(refs, has_segments, count, 3)
  q_ref, k_ref, v_ref, o_ref, lse_ref, m_scratch, l_scratch, acc_scratch = r.operands
  b, q_block, k_block = pl.program_id(0), pl.program_id(2), pl.program_id(3)
  block_q, block_k = skip.block_q, skip.block_k

  @pl.when(k_block == 0)
  def _init():
    m_scratch[...] = jnp.full(m_scratch.shape, -jnp.inf, jnp.float32)
    l_scratch[...] = jnp.zeros(l_scratch.shape, jnp.float32)
    acc_scratch[...] = jnp.zeros(acc_scratch.shape, jnp.float32)
    if count:
      r.counter[0] = 0

  def step(mask_causal):
    v = v_ref[...]  # [block_k, D]
    s = lax.dot_general(q_ref[...], k_ref[...], _NT, preferred_element_type=jnp.float32)
    s = s * sm_scale  # [block_q, block_k]
    q_segments = None if r.seg_q is None else r.seg_q[...].T  # [block_q, 1]
    k_segments = None if r.seg_k is None else r.seg_k[...]  # [1, block_k]
    mask = _mask(s.shape, 0, q_block * block_q, k_block * block_k, mask_causal, q_segments, k_segments)
    if mask is not None:
      s = jnp.where(mask, s, MASK_VALUE)
    m_prev = m_scratch[...]  # [block_q, 1]
    m_next = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
    alpha = jnp.exp(m_prev - m_next)  # rescales what was summed under the old maximum
    p = jnp.exp(s - m_next)
    l_scratch[...] = alpha * l_scratch[...] + jnp.sum(p, axis=1, keepdims=True)
    pv = jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32)
    acc_scratch[...] = alpha * acc_scratch[...] + pv
    m_scratch[...] = m_next

  skip.run(r.sched, b, q_block, k_block, step, r.counter)

  @pl.when(k_block == pl.num_programs(3) - 1)
  def _finish():
    l = l_scratch[...]  # >= 1: the row maximum contributes exp(0)
    o_ref[...] = (acc_scratch[...] * (1.0 / l)).astype(o_ref.dtype)
    lse_ref[...] = (m_scratch[...] + jnp.log(l)).T  # [1, block_q]
    if count:
      r.count_out[...] = jnp.full(r.count_out.shape, r.counter[0], jnp.int32)


def _attention_cost(layout, causal, matmuls, itemsize):
  """Rough FLOPs/bytes so XLA can schedule around the kernel (it reports 0 otherwise). Static: it
  cannot see which blocks the segment ids let the kernel skip (count=True reports those)."""
  pairs = layout.batch * layout.heads * layout.seq * layout.seq * (0.5 if causal else 1.0)
  tiles = layout.batch * layout.seq * layout.head_dim * (2 * layout.heads + 2 * layout.kv_heads)
  return pl.CostEstimate(flops=int(2 * matmuls * pairs * layout.head_dim),
                         transcendentals=int(pairs),
                         bytes_accessed=int(tiles * itemsize))


def _query_major_skip(layout, causal, block_q, block_k):
  return _Skip(causal=causal, block_q=block_q, block_k=block_k, num_q=layout.seq // block_q,
               num_k=layout.seq // block_k, window="k")


class _QueryMajorGrid(typing.NamedTuple):
  """What the forward and dq calls share: a (batch, head, query block, key block) grid whose key
  blocks outside a query block's causal/segment window are neither computed nor fetched."""
  grid: tuple
  has_segments: bool
  skip: "_Skip"
  q_block_index: typing.Callable
  q_spec: typing.Any
  kv_spec: typing.Any
  prefetch: list
  seg_specs: list
  seg_args: list
  count_specs: list
  count_shapes: list
  count_scratch: list


def _query_major_grid(segment_ids, layout, causal, block_q, block_k, count) -> _QueryMajorGrid:
  group, has_segments = layout.group, segment_ids is not None
  grid = (layout.batch, layout.heads, layout.seq // block_q, layout.seq // block_k)
  n = len(grid)
  skip = _query_major_skip(layout, causal, block_q, block_k)
  sched = schedule(segment_ids, block_q=block_q, block_k=block_k, causal=causal,
                   by_query=True) if has_segments else None

  def q_index(ids, sc):
    b, h, i, _ = ids
    return b, h, i

  def kv_index(ids, sc):
    b, h, i, j = ids
    return b, h // group, skip.fetch(sc, b, i, j)

  prefetch, seg_specs, seg_args = _segment_inputs(
      segment_ids, sched, n, block_q, block_k, lambda ids, sc: (ids[0], ids[2]),
      lambda ids, sc: (ids[0], kv_index(ids, sc)[2]))
  count_specs, count_shapes, count_scratch = _count_parts(count, layout, layout.heads, block_q, n,
                                                          q_index)
  return _QueryMajorGrid(grid, has_segments, skip, _grid_index(n, q_index),
                         layout.tile_spec(block_q, _grid_index(n, q_index)),
                         layout.tile_spec(block_k, _grid_index(n, kv_index)),
                         prefetch, seg_specs, seg_args, count_specs, count_shapes, count_scratch)


def forward(q, k, v, segment_ids, *, layout: Layout, causal, sm_scale, block_q, block_k, interpret,
            count=False):
  """o (like q) and lse [B, H, 1, S] float32 (and, with count, blocks computed [B, H, 1, S])."""
  g = _query_major_grid(segment_ids, layout, causal, block_q, block_k, count)
  grid, has_segments, skip, q_spec, kv_spec = g.grid, g.has_segments, g.skip, g.q_spec, g.kv_spec
  prefetch, seg_specs, seg_args = g.prefetch, g.seg_specs, g.seg_args
  count_specs, count_shapes, count_scratch = g.count_specs, g.count_shapes, g.count_scratch
  out_specs = [q_spec, _row_spec(block_q, g.q_block_index)] + count_specs
  out_shape = [layout.tile_shape(layout.heads, q.dtype),
               jax.ShapeDtypeStruct((layout.batch, layout.heads, 1, layout.seq), jnp.float32)]
  scratch = [pltpu.VMEM((block_q, 1), jnp.float32), pltpu.VMEM((block_q, 1), jnp.float32),
             pltpu.VMEM((block_q, layout.head_dim), jnp.float32)] + count_scratch
  kernel = functools.partial(_forward_kernel, skip=skip, sm_scale=sm_scale,
                             has_segments=has_segments, count=count)
  call = _call(kernel, grid=grid, num_prefetch=len(prefetch), in_specs=seg_specs + [q_spec, kv_spec, kv_spec],
               out_specs=out_specs, out_shape=out_shape + count_shapes, scratch_shapes=scratch,
               semantics=("parallel", "parallel", "parallel", "arbitrary"),
               cost=_attention_cost(layout, causal, 2, q.dtype.itemsize), interpret=interpret,
               name="flash_attention_fwd")
  return tuple(call(*prefetch, *seg_args, q, k, v))


# ---- backward: dq ------------------------------------------------------------------------------

def _dq_kernel(*refs, skip, sm_scale, has_segments, count):
  r = _Refs(refs, has_segments, count, 1)
  q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, dq_ref, dq_scratch = r.operands
  b, q_block, k_block = pl.program_id(0), pl.program_id(2), pl.program_id(3)

  @pl.when(k_block == 0)
  def _init():
    dq_scratch[...] = jnp.zeros(dq_scratch.shape, jnp.float32)
    if count:
      r.counter[0] = 0

  def step(mask_causal):
    k = k_ref[...]  # [block_k, D]
    s = lax.dot_general(q_ref[...], k, _NT, preferred_element_type=jnp.float32) * sm_scale
    q_segments = None if r.seg_q is None else r.seg_q[...].T
    k_segments = None if r.seg_k is None else r.seg_k[...]
    mask = _mask(s.shape, 0, q_block * skip.block_q, k_block * skip.block_k, mask_causal, q_segments,
                 k_segments)
    if mask is not None:
      s = jnp.where(mask, s, MASK_VALUE)
    p = jnp.exp(s - lse_ref[...].T)  # [block_q, block_k], the forward's probabilities
    dp = lax.dot_general(do_ref[...], v_ref[...], _NT, preferred_element_type=jnp.float32)
    ds = p * (dp - di_ref[...].T)
    dq_scratch[...] += jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

  skip.run(r.sched, b, q_block, k_block, step, r.counter)

  @pl.when(k_block == pl.num_programs(3) - 1)
  def _finish():
    dq_ref[...] = (dq_scratch[...] * sm_scale).astype(dq_ref.dtype)
    if count:
      r.count_out[...] = jnp.full(r.count_out.shape, r.counter[0], jnp.int32)


def backward_dq(q, k, v, segment_ids, do, lse, di, *, layout: Layout, causal, sm_scale, block_q,
                block_k, interpret, count=False):
  """dq like q (and, with count, blocks computed [B, H, 1, S])."""
  g = _query_major_grid(segment_ids, layout, causal, block_q, block_k, count)
  grid, has_segments, skip, q_spec, kv_spec = g.grid, g.has_segments, g.skip, g.q_spec, g.kv_spec
  prefetch, seg_specs, seg_args = g.prefetch, g.seg_specs, g.seg_args
  count_specs, count_shapes, count_scratch = g.count_specs, g.count_shapes, g.count_scratch
  row_spec = _row_spec(block_q, g.q_block_index)
  kernel = functools.partial(_dq_kernel, skip=skip, sm_scale=sm_scale, has_segments=has_segments,
                             count=count)
  call = _call(kernel, grid=grid, num_prefetch=len(prefetch),
               in_specs=seg_specs + [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec],
               out_specs=[q_spec] + count_specs,
               out_shape=[layout.tile_shape(layout.heads, q.dtype)] + count_shapes,
               scratch_shapes=[pltpu.VMEM((block_q, layout.head_dim), jnp.float32)] + count_scratch,
               semantics=("parallel", "parallel", "parallel", "arbitrary"),
               cost=_attention_cost(layout, causal, 3, q.dtype.itemsize), interpret=interpret,
               name="flash_attention_dq")
  out = call(*prefetch, *seg_args, q, k, v, do, lse, di)
  return tuple(out) if count else out[0]


# ---- backward: dk, dv --------------------------------------------------------------------------

def _dkv_kernel(*refs, skip, sm_scale, has_segments, count):
  r = _Refs(refs, has_segments, count, 2)
  q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, dk_ref, dv_ref, dk_scratch, dv_scratch = r.operands
  b, k_block = pl.program_id(0), pl.program_id(2)
  head_in_group, q_block = pl.program_id(3), pl.program_id(4)

  @pl.when(jnp.logical_and(head_in_group == 0, q_block == 0))
  def _init():
    dk_scratch[...] = jnp.zeros(dk_scratch.shape, jnp.float32)
    dv_scratch[...] = jnp.zeros(dv_scratch.shape, jnp.float32)
    if count:
      r.counter[0] = 0

  # Transposed orientation (keys on sublanes, queries on lanes): the [1, block_q] rows of lse and
  # di broadcast as they are, and dk, dv come out of plain matmuls.
  def step(mask_causal):
    q, do = q_ref[...], do_ref[...]  # [block_q, D]
    s_t = lax.dot_general(k_ref[...], q, _NT, preferred_element_type=jnp.float32) * sm_scale
    q_segments = None if r.seg_q is None else r.seg_q[...]  # [1, block_q]
    k_segments = None if r.seg_k is None else r.seg_k[...].T  # [block_k, 1]
    mask = _mask(s_t.shape, 1, q_block * skip.block_q, k_block * skip.block_k, mask_causal,
                 q_segments, k_segments)
    if mask is not None:
      s_t = jnp.where(mask, s_t, MASK_VALUE)
    p_t = jnp.exp(s_t - lse_ref[...])  # [block_k, block_q]
    dv_scratch[...] += jnp.dot(p_t.astype(do.dtype), do, preferred_element_type=jnp.float32)
    dp_t = lax.dot_general(v_ref[...], do, _NT, preferred_element_type=jnp.float32)
    ds_t = p_t * (dp_t - di_ref[...])
    dk_scratch[...] += jnp.dot(ds_t.astype(q.dtype), q, preferred_element_type=jnp.float32)

  skip.run(r.sched, b, q_block, k_block, step, r.counter)

  @pl.when(jnp.logical_and(head_in_group == pl.num_programs(3) - 1,
                           q_block == pl.num_programs(4) - 1))
  def _finish():
    dk_ref[...] = (dk_scratch[...] * sm_scale).astype(dk_ref.dtype)
    dv_ref[...] = dv_scratch[...].astype(dv_ref.dtype)
    if count:
      r.count_out[...] = jnp.full(r.count_out.shape, r.counter[0], jnp.int32)


def backward_dkv(q, k, v, segment_ids, do, lse, di, *, layout: Layout, causal, sm_scale, block_q,
                 block_k, interpret, count=False):
  """dk, dv like k (and, with count, blocks computed [B, KV, 1, S])."""
  group, has_segments = layout.group, segment_ids is not None
  grid = (layout.batch, layout.kv_heads, layout.seq // block_k, group, layout.seq // block_q)
  n = len(grid)
  skip = _Skip(causal=causal, block_q=block_q, block_k=block_k, num_q=layout.seq // block_q,
               num_k=layout.seq // block_k, window="q")
  sched = schedule(segment_ids, block_q=block_q, block_k=block_k, causal=causal,
                   by_query=False) if has_segments else None

  def q_index(ids, sc):
    b, kvh, j, g, i = ids
    return b, kvh * group + g, skip.fetch(sc, b, j, i)

  def kv_index(ids, sc):
    b, kvh, j, _, _ = ids
    return b, kvh, j

  q_spec = layout.tile_spec(block_q, _grid_index(n, q_index))
  kv_spec = layout.tile_spec(block_k, _grid_index(n, kv_index))
  row_spec = _row_spec(block_q, _grid_index(n, q_index))
  prefetch, seg_specs, seg_args = _segment_inputs(
      segment_ids, sched, n, block_q, block_k, lambda ids, sc: (ids[0], q_index(ids, sc)[2]),
      lambda ids, sc: (ids[0], ids[2]))
  count_specs, count_shapes, count_scratch = _count_parts(count, layout, layout.kv_heads, block_k, n,
                                                          kv_index)
  kernel = functools.partial(_dkv_kernel, skip=skip, sm_scale=sm_scale, has_segments=has_segments,
                             count=count)
  kv_shape = layout.tile_shape(layout.kv_heads, k.dtype)
  call = _call(kernel, grid=grid, num_prefetch=len(prefetch),
               in_specs=seg_specs + [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec],
               out_specs=[kv_spec, kv_spec] + count_specs, out_shape=[kv_shape, kv_shape] + count_shapes,
               scratch_shapes=[pltpu.VMEM((block_k, layout.head_dim), jnp.float32)] * 2 + count_scratch,
               semantics=("parallel", "parallel", "parallel", "arbitrary", "arbitrary"),
               cost=_attention_cost(layout, causal, 4, q.dtype.itemsize), interpret=interpret,
               name="flash_attention_dkv")
  return tuple(call(*prefetch, *seg_args, q, k, v, do, lse, di))
