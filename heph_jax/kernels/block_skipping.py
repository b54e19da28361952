"""Which (query block, key block) tiles the flash-attention kernels compute, and their masks.

A tile is needed when some query of it may attend to some key of it: causally and, with segment
ids, by segment (the [min, max] ranges of the ids in the two blocks overlap). `schedule` computes the
per-block ranges and each block's window of needed blocks once per call in plain XLA; the kernels
(flash_attention_kernels.py) read them by scalar prefetch, and `Skip` runs a kernel step only on the
needed tiles and points skipped steps' index maps at a block already fetched.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl


def _causal_needed(q_block, block_q, k_block, block_k):
  """Some query of the q block sees some key of the k block under the causal mask."""
  return k_block * block_k <= q_block * block_q + block_q - 1


def _on_diagonal(q_block, block_q, k_block, block_k):
  """The block holds keys after some of its queries, so it needs a causal mask."""
  return k_block * block_k + block_k - 1 > q_block * block_q


# Scalar-prefetch operands (1-D int32, SMEM), in this order: per query block the min and max of its
# positive segment ids and a flag word (1: holds padding id 0, 2: holds a negative id, such as the
# sequence padding of flash_attention.py), per key block the same, then the window of the reduction
# axis: for forward and dq the first/last key block of each query block, for dk/dv the first/last
# query block of each key block. Padding is kept out of the ranges so that the one block where a
# packed row's last document meets its padding does not look as if it held every document.
SCHEDULE_FIELDS = ("q_min", "q_max", "q_flags", "k_min", "k_max", "k_flags", "first", "last")
_INT_MAX, _INT_MIN = int(jnp.iinfo(jnp.int32).max), int(jnp.iinfo(jnp.int32).min)


def _block_range(segments, block):
  """[B, 1, S] ids -> (min, max of the positive ids, flags) per block, each [B, S // block]."""
  rows = segments.reshape(segments.shape[0], -1, block)
  positive = rows > 0
  low = jnp.where(positive, rows, _INT_MAX).min(axis=-1)
  high = jnp.where(positive, rows, _INT_MIN).max(axis=-1)
  flags = jnp.any(rows == 0, axis=-1).astype(jnp.int32) + 2 * jnp.any(rows < 0, axis=-1)
  return low, high, flags


def _overlap(q_min, q_max, q_flags, k_min, k_max, k_flags):
  """Some id may occur in both blocks (conservative: two different negative ids count as one)."""
  ranges = jnp.logical_and(q_min <= k_max, k_min <= q_max)
  return jnp.logical_or(ranges, (q_flags & k_flags) != 0)


def schedule(segments, *, block_q, block_k, causal, by_query: bool):
  """The SCHEDULE_FIELDS arrays for one kernel's blocks (plain XLA, once per call).

  by_query=True: the window runs over key blocks per query block (forward, dq); False: over query
  blocks per key block (dk/dv). Every query block needs at least its diagonal block (a token sees
  itself), so each window is non-empty."""
  q_stats = _block_range(segments, block_q)
  k_stats = _block_range(segments, block_k)
  needed = _overlap(*(x[:, :, None] for x in q_stats), *(x[:, None, :] for x in k_stats))
  if causal:
    i = jnp.arange(q_stats[0].shape[1])[:, None]
    j = jnp.arange(k_stats[0].shape[1])[None, :]
    needed &= _causal_needed(i, block_q, j, block_k)[None]
  if not by_query:
    needed = needed.transpose(0, 2, 1)
  count = needed.shape[-1]
  first = jnp.argmax(needed, axis=-1)
  last = count - 1 - jnp.argmax(needed[..., ::-1], axis=-1)
  return tuple(x.reshape(-1).astype(jnp.int32) for x in (*q_stats, *k_stats, first, last))


@dataclasses.dataclass(frozen=True)
class Skip:
  """Which (q block, k block) steps a kernel computes, and where its index maps point otherwise.

  `sched` holds the scalar-prefetch refs (SCHEDULE_FIELDS) when there are segment ids, else None
  (causal-only skipping, from the block indices alone). `window` is the reduction axis of the
  kernel's grid: "k" (forward, dq) or "q" (dk/dv)."""
  causal: bool
  block_q: int
  block_k: int
  num_q: int
  num_k: int
  window: str

  def _window(self, sched, b, outer):
    width = self.num_q if self.window == "k" else self.num_k
    return sched[6][b * width + outer], sched[7][b * width + outer]

  def needed(self, sched, b, q_block, k_block):
    if sched is None:
      return _causal_needed(q_block, self.block_q, k_block, self.block_k) if self.causal else True
    q_stats = [sched[n][b * self.num_q + q_block] for n in range(3)]
    k_stats = [sched[n][b * self.num_k + k_block] for n in range(3, 6)]
    outer, inner = (q_block, k_block) if self.window == "k" else (k_block, q_block)
    first, last = self._window(sched, b, outer)
    inside = jnp.logical_and(first <= inner, inner <= last)
    return jnp.logical_and(inside, _overlap(*q_stats, *k_stats))

  def fetch(self, sched, b, outer, inner):
    """The block of the reduction axis that step (outer, inner) loads."""
    if sched is not None:
      first, last = self._window(sched, b, outer)
      return jnp.clip(inner, first, last)
    if not self.causal:
      return inner
    if self.window == "k":  # skipped keys re-point at block 0, which the next query block starts with
      return jnp.where(_causal_needed(outer, self.block_q, inner, self.block_k), inner, 0)
    # dk/dv: query blocks before the diagonal re-point at the first one that is used.
    first = (outer * self.block_k) // self.block_q
    return jnp.where(_causal_needed(inner, self.block_q, outer, self.block_k), inner, first)

  def run(self, sched, b, q_block, k_block, step, counter=None):
    """step(mask_causal) on the blocks that are needed (see the module doc)."""
    def counted(mask_causal):
      step(mask_causal)
      if counter is not None:
        counter[0] += 1
    needed = self.needed(sched, b, q_block, k_block)
    if not self.causal:
      if needed is True:
        counted(False)
      else:
        pl.when(needed)(lambda: counted(False))
      return
    diagonal = _on_diagonal(q_block, self.block_q, k_block, self.block_k)
    pl.when(jnp.logical_and(needed, diagonal))(lambda: counted(True))
    pl.when(jnp.logical_and(needed, jnp.logical_not(diagonal)))(lambda: counted(False))


def block_mask(shape, query_axis, q_start, k_start, causal, q_segments, k_segments):
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
