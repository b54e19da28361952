"""The logical-axis rules table and what is derived from it, in one place.

A rule maps a logical axis name (the names the model annotates its arrays with) to mesh axes.
configs/base.py sets `config.logical_axis_rules = DEFAULT_RULES`; validation (how many batch shards
the mesh has), the shardings (parallel/mesh.py) and the kernels' shard_map specs (per_shard.py) all
read the table through these functions, so changing it changes all of them together.
Pure Python: config validation imports this without jax.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

DEFAULT_RULES = (
    ("batch", ("dcn_data", "data", "fsdp")),
    ("seq", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("norm", None),
)


def mesh_axes(logical: str, rules: Sequence) -> tuple[str, ...]:
  """The mesh axes the rules give a logical axis (the first matching rule, as flax reads them);
  () when it is replicated or has no rule."""
  for name, physical in rules:
    if name == logical:
      if physical is None:
        return ()
      return (physical,) if isinstance(physical, str) else tuple(physical)
  return ()


def batch_shards(mesh_shape: Mapping[str, int], rules: Sequence) -> tuple[int, tuple[str, ...]]:
  """(number of shards the batch dimension is split into, the mesh axes that split it)."""
  axes = mesh_axes("batch", rules)
  return math.prod(int(mesh_shape[a]) for a in axes), axes
