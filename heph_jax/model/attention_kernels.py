"""The model's kernel attention paths under the mesh: `impl="pallas"` (heph_jax.kernels.flash_attention,
TPU/GPU) and `impl="cpu"` (heph_jax.kernels.cpu_attention, a C++ kernel for XLA:CPU).

A kernel is opaque to XLA's SPMD partitioner (it would gather whole arrays onto every device), so
when a mesh is set (jax.set_mesh) the kernel runs per shard inside jax.shard_map: batch split over
('data', 'fsdp') and heads over 'tensor', as the logical rules place them. Every shard holds whole
sequences and whole GQA groups, so no communication is needed inside. An axis is left out (its
shards compute redundantly) when the dimension does not divide by its size, e.g. the batch-1 trace
of model init.
"""
from __future__ import annotations

import math

import jax
from jax.sharding import PartitionSpec as P

_BATCH_AXES = ("dcn_data", "data", "fsdp")  # the "batch" rule's mesh axes
_HEAD_AXES = ("tensor",)


def _dividing_axes(mesh, candidates, *sizes):
  """The candidate mesh axes (in order) whose running product divides every size."""
  chosen = []
  for name in candidates:
    if name not in mesh.axis_names or mesh.shape[name] == 1:
      continue
    product = math.prod(mesh.shape[a] for a in chosen) * mesh.shape[name]
    if all(size % product == 0 for size in sizes):
      chosen.append(name)
  return tuple(chosen) or None


def per_shard(attend, q, k, v, segment_ids):
  """attend(q, k, v, segment_ids) on each device's batch rows and heads (see the module doc)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return attend(q, k, v, segment_ids)
  batch = _dividing_axes(mesh, _BATCH_AXES, q.shape[0])
  heads = _dividing_axes(mesh, _HEAD_AXES, q.shape[2], k.shape[2])
  tile_spec = P(batch, None, heads, None)
  segment_spec = None if segment_ids is None else P(batch, None)
  sharded = jax.shard_map(attend, mesh=mesh, in_specs=(tile_spec, tile_spec, tile_spec, segment_spec),
                          out_specs=tile_spec, check_vma=False)
  return sharded(q, k, v, segment_ids)


def pallas_attention(q, k, v, segment_ids=None, causal=True, sm_scale=None, block_sizes=None):
  """q [B, S, H, D], k/v [B, S, KV, D] (RoPE applied), segment_ids [B, S] -> [B, S, H, D]."""
  from heph_jax.kernels.flash_attention import flash_attention

  def attend(q, k, v, segment_ids):
    return flash_attention(q, k, v, segment_ids, causal=causal, sm_scale=sm_scale,
                           block_sizes=block_sizes)
  return per_shard(attend, q, k, v, segment_ids)


def cpu_attention(q, k, v, segment_ids=None, causal=True, sm_scale=None):
  """As pallas_attention, with the C++ kernel for XLA:CPU."""
  from heph_jax.kernels.cpu_attention import cpu_attention as kernel

  def attend(q, k, v, segment_ids):
    return kernel(q, k, v, segment_ids, causal=causal, sm_scale=sm_scale)
  return per_shard(attend, q, k, v, segment_ids)
