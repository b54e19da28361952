"""Runs an attention kernel on each device's shard of the batch and heads (jax.shard_map).

A kernel (Pallas, the C++ CPU kernel) is opaque to XLA's SPMD partitioner, which would gather whole
arrays onto every device, so under a mesh (jax.set_mesh) the kernel runs per shard. The specs come
from the active logical-axis rules (flax `nn.logical_axis_rules`, else rules.DEFAULT_RULES): the
batch dimension over the "batch" rule's mesh axes, heads over the axes the "heads" and "kv_heads"
rules share (every shard then holds whole sequences and whole GQA groups: no communication inside).
An axis is left out (its shards compute redundantly) when the dimension does not divide by it, e.g.
the batch-1 trace of model init.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec as P

from heph_jax.parallel import rules as rules_lib


def _dividing_axes(mesh_shape, candidates, *sizes):
  """The candidate mesh axes (in order) whose running product divides every size; None if none."""
  chosen = []
  for name in candidates:
    if mesh_shape.get(name, 1) == 1:
      continue
    product = math.prod(mesh_shape[a] for a in chosen) * mesh_shape[name]
    if all(size % product == 0 for size in sizes):
      chosen.append(name)
  return tuple(chosen) or None


def active_rules():
  return tuple(nn.get_logical_axis_rules()) or rules_lib.DEFAULT_RULES


def specs(mesh_shape, rules, q_shape, kv_heads) -> tuple[P, P]:
  """(spec of q/k/v/out [B, S, H, D], spec of segment ids [B, S]) for a mesh and rules table."""
  batch = _dividing_axes(mesh_shape, rules_lib.mesh_axes("batch", rules), q_shape[0])
  kv_axes = rules_lib.mesh_axes("kv_heads", rules)
  head_axes = tuple(a for a in rules_lib.mesh_axes("heads", rules) if a in kv_axes)
  heads = _dividing_axes(mesh_shape, head_axes, q_shape[2], kv_heads)
  return P(batch, None, heads, None), P(batch, None)


def per_shard(attend, q, k, v, segment_ids):
  """attend(q, k, v, segment_ids) on each device's batch rows and heads (see the module doc)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return attend(q, k, v, segment_ids)
  tile_spec, segment_spec = specs(dict(mesh.shape), active_rules(), q.shape, k.shape[2])
  segment_spec = None if segment_ids is None else segment_spec
  sharded = jax.shard_map(attend, mesh=mesh, in_specs=(tile_spec, tile_spec, tile_spec, segment_spec),
                          out_specs=tile_spec, check_vma=False)
  return sharded(q, k, v, segment_ids)
