"""gcloud TPU accelerator names -> libtpu topology, chip config, HBM and peak FLOPs per chip.

gcloud counts TensorCores for v4 and v5p (two per chip, fused into one JAX device by megacore) and
chips for v5e and v6e:

    v5p-64   -> 32 chips, topology "v5:2x4x4", chip_config "megacore"
    v5e-256  -> 256 chips, topology "v5e:16x16", chip_config "default"

A libtpu topology string ("v5:4x4x12", "v5e:2x4") is accepted as well, for shapes the doubling rule
below does not produce. Nothing here imports JAX; `topology_devices` does, for AOT compiles.
"""
from __future__ import annotations

import dataclasses
import math
import re

from heph_jax.errors import ConfigError

GIB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class ChipSpec:
  libtpu_name: str        # generation prefix in libtpu topology names
  chip_config: str        # "megacore": one JAX device per chip (2 TensorCores)
  cores_per_name_unit: int  # gcloud's N counts TensorCores (2 per chip) or chips (1)
  dims: int               # 3-D torus (v4, v5p) or 2-D (v5e, v6e)
  hbm_bytes: int          # per chip, as sold
  peak_bf16_flops: float  # per chip, dense bf16


# Google Cloud's published per-chip figures.
CHIPS = {
    "v4": ChipSpec("v4", "megacore", 2, 3, 32 * GIB, 275e12),
    "v5p": ChipSpec("v5", "megacore", 2, 3, 95 * GIB, 459e12),
    "v5e": ChipSpec("v5e", "default", 1, 2, 16 * GIB, 197e12),
    "v6e": ChipSpec("v6e", "default", 1, 2, 32 * GIB, 918e12),
}
_ALIASES = {"v5litepod": "v5e", "v5": "v5p", "v6": "v6e"}


@dataclasses.dataclass(frozen=True)
class Topology:
  accelerator: str        # as given, e.g. "v5p-64"
  generation: str         # key of CHIPS
  shape: tuple[int, ...]  # chips per torus dimension
  num_slices: int = 1

  @property
  def chip(self) -> ChipSpec:
    return CHIPS[self.generation]

  @property
  def chips_per_slice(self) -> int:
    return math.prod(self.shape)

  @property
  def num_chips(self) -> int:
    return self.chips_per_slice * self.num_slices

  @property
  def topology_name(self) -> str:
    return f"{self.chip.libtpu_name}:{'x'.join(map(str, self.shape))}"

  @property
  def chips_per_host_bounds(self) -> tuple[int, int, int]:
    # TPU VM hosts carry 4 chips (2x2); a single-chip slice has one.
    return (1, 1, 1) if self.chips_per_slice == 1 else (2, 2, 1)

  @property
  def wrap(self) -> tuple[bool, bool, bool]:
    """Torus wrap-around links: full 4x4x4 blocks (3-D) or a full 16-chip edge (2-D pods)."""
    shape = tuple(self.shape) + (1,) * (3 - len(self.shape))
    if self.chip.dims == 3:
      full = all(s >= 4 for s in shape)
      return (full, full, full)
    return tuple(s == 16 for s in shape[:2]) + (False,)


def _doubling_shape(chips: int, dims: int) -> tuple[int, ...] | None:
  """Standard slice shape for a power-of-two chip count: 2x2x1, 2x2x2, 2x2x4, 2x4x4, 4x4x4, 4x4x8..."""
  if chips == 1:
    return (1,) * dims
  if dims == 3 and chips == 4:
    return (2, 2, 1)
  shape = [2] * dims
  while math.prod(shape) < chips:
    # Double the last of the smallest dimensions: keeps the slice as cubic (square) as possible.
    smallest = min(shape)
    last = max(i for i, s in enumerate(shape) if s == smallest)
    shape[last] *= 2
  return tuple(shape) if math.prod(shape) == chips else None


def parse(accelerator: str, num_slices: int = 1) -> Topology:
  """'v5p-64' / 'v5e-256' / 'v5litepod-16' / 'v5:4x4x12' -> Topology; ConfigError names the flag."""
  if num_slices < 1:
    raise ConfigError(f"--num_slices: must be >= 1, got {num_slices}")
  text = accelerator.strip().lower()
  known = ", ".join(sorted(CHIPS))
  explicit = re.fullmatch(r"([a-z0-9]+):(\d+(?:x\d+)+)", text)
  if explicit:
    generation = _ALIASES.get(explicit.group(1), explicit.group(1))
    if generation not in CHIPS:
      raise ConfigError(f"--topology {accelerator!r}: unknown TPU generation {explicit.group(1)!r}; "
                        f"known: {known}")
    shape = tuple(int(s) for s in explicit.group(2).split("x"))
    if len(shape) != CHIPS[generation].dims or 0 in shape:
      raise ConfigError(f"--topology {accelerator!r}: {generation} topologies have "
                        f"{CHIPS[generation].dims} positive dimensions")
    return Topology(accelerator, generation, shape, num_slices)
  named = re.fullmatch(r"([a-z0-9]+)-(\d+)", text)
  if not named:
    raise ConfigError(f"--topology {accelerator!r}: expected a gcloud accelerator type such as "
                      "'v5p-64' or 'v5e-256', or a libtpu topology such as 'v5:2x4x4'")
  generation = _ALIASES.get(named.group(1), named.group(1))
  if generation not in CHIPS:
    raise ConfigError(f"--topology {accelerator!r}: unknown TPU generation {named.group(1)!r}; "
                      f"known: {known}")
  chip, count = CHIPS[generation], int(named.group(2))
  if count % chip.cores_per_name_unit:
    raise ConfigError(f"--topology {accelerator!r}: {generation}-N counts TensorCores, two per chip; "
                      f"N must be even")
  chips = count // chip.cores_per_name_unit
  shape = _doubling_shape(chips, chip.dims) if chips > 0 and chips & (chips - 1) == 0 else None
  if shape is None:
    raise ConfigError(f"--topology {accelerator!r}: no standard slice shape for {chips} chips; give the "
                      f"libtpu topology instead, e.g. '{chip.libtpu_name}:4x4x12'")
  return Topology(accelerator, generation, shape, num_slices)


def topology_devices(topology: Topology):
  """Compile-only TPU devices of the whole (multi-slice) topology; needs libtpu, no TPU."""
  from jax.experimental.topologies import get_topology_desc
  desc = get_topology_desc(platform="tpu", topology_name=topology.topology_name,
                           chip_config_name=topology.chip.chip_config,
                           chips_per_host_bounds=topology.chips_per_host_bounds,
                           num_slices=topology.num_slices, wrap=topology.wrap)
  return desc.devices
