"""Device mesh from config and logical-axis sharding rules.

Mesh axes, outermost first: dcn_data (across slices), data, fsdp, tensor. Axes are AxisType.Auto:
jax.make_mesh now defaults to Explicit axes, which breaks logical-rule (GSPMD) sharding.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from heph_jax.errors import ConfigError

MESH_AXES = ("dcn_data", "data", "fsdp", "tensor")


def mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int, num_slices: int = 1) -> dict[str, int]:
  """Resolves -1 entries; raises ConfigError naming the key if the sizes do not fit the devices."""
  sizes = {axis: int(mesh_cfg.get(axis, 1)) for axis in MESH_AXES}
  unknown = set(mesh_cfg) - set(MESH_AXES)
  if unknown:
    raise ConfigError(f"config.mesh: unknown axis {sorted(unknown)}; axes are {MESH_AXES}")
  for axis, size in sizes.items():
    if size == 0 or size < -1:
      raise ConfigError(f"config.mesh.{axis}: must be a positive size or -1 (fill), got {size}")
  fill = [axis for axis, size in sizes.items() if size == -1]
  if len(fill) > 1:
    raise ConfigError(f"config.mesh: only one axis may be -1, got {fill}")
  known = math.prod(size for size in sizes.values() if size != -1)
  if fill:
    if num_devices % known:
      raise ConfigError(f"config.mesh: the fixed axes {dict((a, s) for a, s in sizes.items() if s != -1)} "
                        f"(product {known}) do not divide the {num_devices} devices")
    sizes[fill[0]] = num_devices // known
  if math.prod(sizes.values()) != num_devices:
    raise ConfigError(f"config.mesh: sizes {sizes} multiply to {math.prod(sizes.values())}, but there are "
                      f"{num_devices} devices; use -1 on one axis to fill")
  if num_slices > 1 and sizes["dcn_data"] != num_slices:
    raise ConfigError(f"config.mesh.dcn_data: {sizes['dcn_data']} must equal the number of slices ({num_slices})")
  return sizes


def make_mesh(mesh_cfg: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  num_slices = len({getattr(d, "slice_index", 0) for d in devices})
  sizes = mesh_shape(mesh_cfg, len(devices), num_slices)
  if num_slices > 1:
    # ICI axes within a slice, dcn_data across slices (slice-major device order).
    from jax.experimental import mesh_utils
    ici = [1] + [sizes[a] for a in MESH_AXES[1:]]
    dcn = [sizes["dcn_data"], 1, 1, 1]
    grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices=devices)
  else:
    try:
      from jax.experimental import mesh_utils
      grid = mesh_utils.create_device_mesh([sizes[a] for a in MESH_AXES], devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
      grid = np.array(devices).reshape([sizes[a] for a in MESH_AXES])
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def rules_tuple(rules) -> tuple:
  """Normalizes a config rules table (lists from JSON, tuples from code) to nested tuples."""
  out = []
  for logical, physical in rules:
    if isinstance(physical, (list, tuple)):
      physical = tuple(physical)
    out.append((logical, physical))
  return tuple(out)


def logical_to_spec(axes: Sequence[str | None], rules) -> PartitionSpec:
  return nn.logical_to_mesh_axes(tuple(axes), rules_tuple(rules))


def logical_to_sharding(logical_tree, mesh: Mesh, rules):
  """Pytree of logical axis tuples -> pytree of NamedShardings (leaves: tuples of names)."""
  is_leaf = lambda x: isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x)
  return jax.tree.map(lambda axes: NamedSharding(mesh, logical_to_spec(axes, rules)), logical_tree,
                      is_leaf=is_leaf)


def batch_sharding(mesh: Mesh, rules, ndim: int = 2) -> NamedSharding:
  """Sharding of [batch, seq, ...] input arrays."""
  return NamedSharding(mesh, logical_to_spec(("batch", "seq") + (None,) * (ndim - 2), rules))
