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
Causal blocks strictly above the diagonal are skipped, and their index maps repeat a block that the
next useful step needs, so the pipeline issues no DMA for them. Only blocks that straddle the diagonal
build a causal mask.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

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


def _needed(q_block, block_q, k_block, block_k):
  """Some query of the q block sees some key of the k block under the causal mask."""
  return k_block * block_k <= q_block * block_q + block_q - 1


def _on_diagonal(q_block, block_q, k_block, block_k):
  """The block holds keys after some of its queries, so it needs a causal mask."""
  return k_block * block_k + block_k - 1 > q_block * block_q


def _for_causal_blocks(causal, q_block, block_q, k_block, block_k, step):
  """Run step(mask_causal) on the blocks that matter; blocks above the diagonal are skipped."""
  if not causal:
    step(False)
    return
  needed = _needed(q_block, block_q, k_block, block_k)
  diagonal = _on_diagonal(q_block, block_q, k_block, block_k)
  pl.when(jnp.logical_and(needed, diagonal))(lambda: step(True))
  pl.when(jnp.logical_and(needed, jnp.logical_not(diagonal)))(lambda: step(False))


def _mask(shape, query_axis, q_start, k_start, causal, q_segments, k_segments):
  """Boolean [rows, cols] mask (None if nothing is masked); queries run along `query_axis`."""
  mask = None
  if q_segments is not None:
    mask = q_segments == k_segments  # one is a column, the other a row
  if causal:
    q_pos = q_start + lax.broadcasted_iota(jnp.int32, shape, query_axis)
    k_pos = k_start + lax.broadcasted_iota(jnp.int32, shape, 1 - query_axis)
    causal_mask = q_pos >= k_pos
    mask = causal_mask if mask is None else jnp.logical_and(mask, causal_mask)
  return mask


def _split_segment_refs(has_segments, refs):
  if has_segments:
    return refs[0], refs[1], refs[2:]
  return None, None, refs


def _compiler_params(semantics):
  return pltpu.CompilerParams(dimension_semantics=semantics)


def _call(kernel, *, grid, in_specs, out_specs, out_shape, scratch_shapes, semantics, cost, interpret,
          name):
  """pallas_call that lowers to Mosaic on TPU and to interpret mode elsewhere when interpret is None."""
  def build(interpret_mode):
    return pl.pallas_call(kernel, out_shape=out_shape, grid=grid, in_specs=in_specs,
                          out_specs=out_specs, scratch_shapes=scratch_shapes,
                          compiler_params=_compiler_params(semantics), cost_estimate=cost,
                          interpret=interpret_mode, name=name)

  if interpret is not None:
    return build(interpret)

  def run(*args):
    return lax.platform_dependent(*args, tpu=build(False), default=build(True))
  return run


# ---- forward -----------------------------------------------------------------------------------

def _forward_kernel(*refs, causal, sm_scale, block_q, block_k, has_segments):
  seg_q_ref, seg_k_ref, refs = _split_segment_refs(has_segments, refs)
  q_ref, k_ref, v_ref, o_ref, lse_ref, m_scratch, l_scratch, acc_scratch = refs
  q_block, k_block = pl.program_id(2), pl.program_id(3)

  @pl.when(k_block == 0)
  def _init():
    m_scratch[...] = jnp.full(m_scratch.shape, -jnp.inf, jnp.float32)
    l_scratch[...] = jnp.zeros(l_scratch.shape, jnp.float32)
    acc_scratch[...] = jnp.zeros(acc_scratch.shape, jnp.float32)

  def step(mask_causal):
    v = v_ref[...]  # [block_k, D]
    s = lax.dot_general(q_ref[...], k_ref[...], _NT, preferred_element_type=jnp.float32)
    s = s * sm_scale  # [block_q, block_k]
    q_segments = None if seg_q_ref is None else seg_q_ref[...].T  # [block_q, 1]
    k_segments = None if seg_k_ref is None else seg_k_ref[...]  # [1, block_k]
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

  _for_causal_blocks(causal, q_block, block_q, k_block, block_k, step)

  @pl.when(k_block == pl.num_programs(3) - 1)
  def _finish():
    l = l_scratch[...]  # >= 1: the row maximum contributes exp(0)
    o_ref[...] = (acc_scratch[...] * (1.0 / l)).astype(o_ref.dtype)
    lse_ref[...] = (m_scratch[...] + jnp.log(l)).T  # [1, block_q]


def _attention_cost(layout, causal, matmuls, itemsize):
  """Rough FLOPs/bytes so XLA can schedule around the kernel (it reports 0 otherwise)."""
  pairs = layout.batch * layout.heads * layout.seq * layout.seq * (0.5 if causal else 1.0)
  tiles = layout.batch * layout.seq * layout.head_dim * (2 * layout.heads + 2 * layout.kv_heads)
  return pl.CostEstimate(flops=int(2 * matmuls * pairs * layout.head_dim),
                         transcendentals=int(pairs),
                         bytes_accessed=int(tiles * itemsize))


def forward(q, k, v, segment_ids, *, layout: Layout, causal, sm_scale, block_q, block_k, interpret):
  """o (like q) and lse [B, H, 1, S] float32."""
  group, has_segments = layout.group, segment_ids is not None
  grid = (layout.batch, layout.heads, layout.seq // block_q, layout.seq // block_k)

  def kv_block(q_block, k_block):
    if not causal:
      return k_block
    # A skipped step re-points at block 0, which the next query block starts with.
    return jnp.where(_needed(q_block, block_q, k_block, block_k), k_block, 0)

  q_spec = layout.tile_spec(block_q, lambda b, h, i, j: (b, h, i))
  kv_spec = layout.tile_spec(block_k, lambda b, h, i, j: (b, h // group, kv_block(i, j)))
  in_specs, args = [q_spec, kv_spec, kv_spec], [q, k, v]
  if has_segments:
    in_specs = [_segment_spec(block_q, lambda b, h, i, j: (b, i)),
                _segment_spec(block_k, lambda b, h, i, j: (b, kv_block(i, j)))] + in_specs
    args = [segment_ids, segment_ids] + args
  out_specs = [q_spec, _row_spec(block_q, lambda b, h, i, j: (b, h, i))]
  out_shape = [layout.tile_shape(layout.heads, q.dtype),
               jax.ShapeDtypeStruct((layout.batch, layout.heads, 1, layout.seq), jnp.float32)]
  scratch = [pltpu.VMEM((block_q, 1), jnp.float32), pltpu.VMEM((block_q, 1), jnp.float32),
             pltpu.VMEM((block_q, layout.head_dim), jnp.float32)]
  kernel = functools.partial(_forward_kernel, causal=causal, sm_scale=sm_scale, block_q=block_q,
                             block_k=block_k, has_segments=has_segments)
  call = _call(kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
               scratch_shapes=scratch, semantics=("parallel", "parallel", "parallel", "arbitrary"),
               cost=_attention_cost(layout, causal, 2, q.dtype.itemsize), interpret=interpret,
               name="flash_attention_fwd")
  o, lse = call(*args)
  return o, lse


# ---- backward: dq ------------------------------------------------------------------------------

def _dq_kernel(*refs, causal, sm_scale, block_q, block_k, has_segments):
  seg_q_ref, seg_k_ref, refs = _split_segment_refs(has_segments, refs)
  q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, dq_ref, dq_scratch = refs
  q_block, k_block = pl.program_id(2), pl.program_id(3)

  @pl.when(k_block == 0)
  def _init():
    dq_scratch[...] = jnp.zeros(dq_scratch.shape, jnp.float32)

  def step(mask_causal):
    k = k_ref[...]  # [block_k, D]
    s = lax.dot_general(q_ref[...], k, _NT, preferred_element_type=jnp.float32) * sm_scale
    q_segments = None if seg_q_ref is None else seg_q_ref[...].T
    k_segments = None if seg_k_ref is None else seg_k_ref[...]
    mask = _mask(s.shape, 0, q_block * block_q, k_block * block_k, mask_causal, q_segments, k_segments)
    if mask is not None:
      s = jnp.where(mask, s, MASK_VALUE)
    p = jnp.exp(s - lse_ref[...].T)  # [block_q, block_k], the forward's probabilities
    dp = lax.dot_general(do_ref[...], v_ref[...], _NT, preferred_element_type=jnp.float32)
    ds = p * (dp - di_ref[...].T)
    dq_scratch[...] += jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

  _for_causal_blocks(causal, q_block, block_q, k_block, block_k, step)

  @pl.when(k_block == pl.num_programs(3) - 1)
  def _finish():
    dq_ref[...] = (dq_scratch[...] * sm_scale).astype(dq_ref.dtype)


def backward_dq(q, k, v, segment_ids, do, lse, di, *, layout: Layout, causal, sm_scale, block_q,
                block_k, interpret):
  group, has_segments = layout.group, segment_ids is not None
  grid = (layout.batch, layout.heads, layout.seq // block_q, layout.seq // block_k)

  def kv_block(q_block, k_block):
    if not causal:
      return k_block
    return jnp.where(_needed(q_block, block_q, k_block, block_k), k_block, 0)

  q_spec = layout.tile_spec(block_q, lambda b, h, i, j: (b, h, i))
  kv_spec = layout.tile_spec(block_k, lambda b, h, i, j: (b, h // group, kv_block(i, j)))
  row_spec = _row_spec(block_q, lambda b, h, i, j: (b, h, i))
  in_specs, args = [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec], [q, k, v, do, lse, di]
  if has_segments:
    in_specs = [_segment_spec(block_q, lambda b, h, i, j: (b, i)),
                _segment_spec(block_k, lambda b, h, i, j: (b, kv_block(i, j)))] + in_specs
    args = [segment_ids, segment_ids] + args
  kernel = functools.partial(_dq_kernel, causal=causal, sm_scale=sm_scale, block_q=block_q,
                             block_k=block_k, has_segments=has_segments)
  call = _call(kernel, grid=grid, in_specs=in_specs, out_specs=q_spec,
               out_shape=layout.tile_shape(layout.heads, q.dtype),
               scratch_shapes=[pltpu.VMEM((block_q, layout.head_dim), jnp.float32)],
               semantics=("parallel", "parallel", "parallel", "arbitrary"),
               cost=_attention_cost(layout, causal, 3, q.dtype.itemsize), interpret=interpret,
               name="flash_attention_dq")
  return call(*args)


# ---- backward: dk, dv --------------------------------------------------------------------------

def _dkv_kernel(*refs, causal, sm_scale, block_q, block_k, has_segments):
  seg_q_ref, seg_k_ref, refs = _split_segment_refs(has_segments, refs)
  q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, dk_ref, dv_ref, dk_scratch, dv_scratch = refs
  k_block, head_in_group, q_block = pl.program_id(2), pl.program_id(3), pl.program_id(4)

  @pl.when(jnp.logical_and(head_in_group == 0, q_block == 0))
  def _init():
    dk_scratch[...] = jnp.zeros(dk_scratch.shape, jnp.float32)
    dv_scratch[...] = jnp.zeros(dv_scratch.shape, jnp.float32)

  # Transposed orientation (keys on sublanes, queries on lanes): the [1, block_q] rows of lse and
  # di broadcast as they are, and dk, dv come out of plain matmuls.
  def step(mask_causal):
    q, do = q_ref[...], do_ref[...]  # [block_q, D]
    s_t = lax.dot_general(k_ref[...], q, _NT, preferred_element_type=jnp.float32) * sm_scale
    q_segments = None if seg_q_ref is None else seg_q_ref[...]  # [1, block_q]
    k_segments = None if seg_k_ref is None else seg_k_ref[...].T  # [block_k, 1]
    mask = _mask(s_t.shape, 1, q_block * block_q, k_block * block_k, mask_causal, q_segments,
                 k_segments)
    if mask is not None:
      s_t = jnp.where(mask, s_t, MASK_VALUE)
    p_t = jnp.exp(s_t - lse_ref[...])  # [block_k, block_q]
    dv_scratch[...] += jnp.dot(p_t.astype(do.dtype), do, preferred_element_type=jnp.float32)
    dp_t = lax.dot_general(v_ref[...], do, _NT, preferred_element_type=jnp.float32)
    ds_t = p_t * (dp_t - di_ref[...])
    dk_scratch[...] += jnp.dot(ds_t.astype(q.dtype), q, preferred_element_type=jnp.float32)

  _for_causal_blocks(causal, q_block, block_q, k_block, block_k, step)

  @pl.when(jnp.logical_and(head_in_group == pl.num_programs(3) - 1,
                           q_block == pl.num_programs(4) - 1))
  def _finish():
    dk_ref[...] = (dk_scratch[...] * sm_scale).astype(dk_ref.dtype)
    dv_ref[...] = dv_scratch[...].astype(dv_ref.dtype)


def backward_dkv(q, k, v, segment_ids, do, lse, di, *, layout: Layout, causal, sm_scale, block_q,
                 block_k, interpret):
  group, has_segments = layout.group, segment_ids is not None
  grid = (layout.batch, layout.kv_heads, layout.seq // block_k, group, layout.seq // block_q)

  def q_block_of(k_block, q_block):
    if not causal:
      return q_block
    # Query blocks before the diagonal are skipped; they re-point at the first one that is used.
    first = (k_block * block_k) // block_q
    return jnp.where(_needed(q_block, block_q, k_block, block_k), q_block, first)

  def q_index(b, kvh, j, g, i):
    return b, kvh * group + g, q_block_of(j, i)

  q_spec = layout.tile_spec(block_q, q_index)
  kv_spec = layout.tile_spec(block_k, lambda b, kvh, j, g, i: (b, kvh, j))
  row_spec = _row_spec(block_q, q_index)
  in_specs, args = [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec], [q, k, v, do, lse, di]
  if has_segments:
    in_specs = [_segment_spec(block_q, lambda b, kvh, j, g, i: (b, q_block_of(j, i))),
                _segment_spec(block_k, lambda b, kvh, j, g, i: (b, j))] + in_specs
    args = [segment_ids, segment_ids] + args
  kernel = functools.partial(_dkv_kernel, causal=causal, sm_scale=sm_scale, block_q=block_q,
                             block_k=block_k, has_segments=has_segments)
  kv_shape = layout.tile_shape(layout.kv_heads, k.dtype)
  call = _call(kernel, grid=grid, in_specs=in_specs, out_specs=[kv_spec, kv_spec],
               out_shape=[kv_shape, kv_shape],
               scratch_shapes=[pltpu.VMEM((block_k, layout.head_dim), jnp.float32)] * 2,
               semantics=("parallel", "parallel", "parallel", "arbitrary", "arbitrary"),
               cost=_attention_cost(layout, causal, 4, q.dtype.itemsize), interpret=interpret,
               name="flash_attention_dkv")
  dk, dv = call(*args)
  return dk, dv
