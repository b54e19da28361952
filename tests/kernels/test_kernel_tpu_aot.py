"""Ahead-of-time compile of the flash attention kernels for real TPU targets, on this CPU machine.

libtpu provides compile-only TPU devices (jax.experimental.topologies), so `.compile()` runs the
real XLA:TPU and Mosaic compilers: a kernel that Mosaic rejects (tiling, layouts, VMEM) fails here.
No interpret mode is involved: lowering for TPU picks the Mosaic branch of the kernels.
"""
import os

# Several processes on one box may load libtpu for compiling only; without this the second one fails
# with "Internal error when accessing libtpu multi-process lockfile".
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import numpy as np
import pytest

pytest.importorskip("libtpu")

import jax
import jax.numpy as jnp
from jax.experimental.topologies import get_topology_desc
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from heph_jax.kernels.flash_attention import BlockSizes, flash_attention
from heph_jax.model.attention import pallas_attention

pytestmark = pytest.mark.tpu_aot

# name -> (topology_name, chip_config_name); v5p is "v5" in libtpu's topology names.
TOPOLOGIES = {"v5e": ("v5e:2x2", "default"), "v5p": ("v5:2x2x1", "megacore"),
              "v6e": ("v6e:2x2", "default")}


def _devices(generation):
  name, chip_config = TOPOLOGIES[generation]
  return get_topology_desc(platform="tpu", topology_name=name, chip_config_name=chip_config,
                           chips_per_host_bounds=(2, 2, 1), num_slices=1).devices


def _compile_forward_and_backward(fn, mesh, specs, shapes_and_dtypes):
  args = [None if shape is None else
          jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))
          for (shape, dtype), spec in zip(shapes_and_dtypes, specs)]

  def loss(q, k, v, segment_ids):
    return fn(q, k, v, segment_ids).astype(jnp.float32).sum()

  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
  with jax.set_mesh(mesh):  # Pallas reads the TPU generation from the mesh's devices
    lowered = step.lower(*args)
  return lowered, lowered.compile()


# (batch, seq, heads, kv_heads, head_dim, dtype, causal, segments, blocks): the fused [B, S, H*D]
# layout (head_dim 128) and the [B, H, S, D] layout (head_dim 64), GQA, padding to the block.
KERNEL_CASES = [
    (2, 384, 8, 2, 128, jnp.bfloat16, True, True, BlockSizes(256, 128, 128, 256, 256, 128)),
    (1, 200, 4, 4, 64, jnp.float32, False, True, None),
    (2, 100, 4, 1, 128, jnp.bfloat16, True, False, None),  # one block shorter than 128
]


@pytest.mark.parametrize("generation", ["v5e", "v5p", pytest.param("v6e", marks=pytest.mark.slow)])
@pytest.mark.parametrize("case", KERNEL_CASES, ids=lambda c: f"S{c[1]}-H{c[2]}-KV{c[3]}-D{c[4]}")
def test_kernels_compile_for_tpu(generation, case):
  batch, seq, heads, kv_heads, head_dim, dtype, causal, segments, blocks = case
  mesh = Mesh(np.array(_devices(generation)[:1]), ("x",))
  fn = lambda q, k, v, s: flash_attention(q, k, v, s, causal=causal, block_sizes=blocks)
  shapes = [((batch, seq, heads, head_dim), dtype), ((batch, seq, kv_heads, head_dim), dtype),
            ((batch, seq, kv_heads, head_dim), dtype),
            ((batch, seq), jnp.int32) if segments else (None, None)]
  lowered, compiled = _compile_forward_and_backward(fn, mesh, [P()] * 4, shapes)
  # Forward, dq and dk/dv are three Mosaic kernels, not interpret-mode XLA loops.
  assert lowered.as_text().count("tpu_custom_call") == 3
  assert compiled.memory_analysis() is not None


@pytest.mark.parametrize("generation", ["v5e", "v5p"])
def test_model_path_compiles_sharded_over_a_tpu_mesh(generation):
  """pallas_attention wraps the kernels in shard_map over ('data','fsdp','tensor')."""
  devices = np.array(_devices(generation)).reshape(2, 1, 2)
  mesh = Mesh(devices, ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
  tiles, rows = P(("data", "fsdp"), None, "tensor", None), P(("data", "fsdp"), None)
  shapes = [((4, 256, 8, 128), jnp.bfloat16), ((4, 256, 2, 128), jnp.bfloat16),
            ((4, 256, 2, 128), jnp.bfloat16), ((4, 256), jnp.int32)]
  lowered, _ = _compile_forward_and_backward(pallas_attention, mesh, [tiles, tiles, tiles, rows],
                                             shapes)
  assert lowered.as_text().count("tpu_custom_call") == 3


def test_mosaic_rejections_fail_the_compile():
  """The check has teeth: a 2048x2048 float32 score tile overflows v5e's scoped VMEM."""
  mesh = Mesh(np.array(_devices("v5e")[:1]), ("x",))
  huge = BlockSizes(*(2048,) * 6)
  tile = jax.ShapeDtypeStruct((1, 2048, 1, 128), jnp.float32, sharding=NamedSharding(mesh, P()))
  forward = jax.jit(lambda q, k, v: flash_attention(q, k, v, block_sizes=huge))
  with jax.set_mesh(mesh):
    lowered = forward.lower(tile, tile, tile)
  with pytest.raises(Exception, match=r"(?i)vmem"):
    lowered.compile()


@pytest.mark.parametrize("generation", ["v5e", "v5p"])
def test_generation_default_blocks_compile_with_segment_skipping(generation):
  """The blocks a run on this generation gets by default (512-row tiles, 1024-key forward tiles on
  v5p), packed segment ids (the scalar-prefetch schedule), bf16, GQA 4:1, 4k tokens."""
  from heph_jax.kernels.flash_attention import resolve_block_sizes
  devices = _devices(generation)
  blocks = resolve_block_sizes((), device_kind=devices[0].device_kind, seq_len=4096, head_dim=128)
  assert blocks.block_q == 512
  mesh = Mesh(np.array(devices[:1]), ("x",))
  fn = lambda q, k, v, s: flash_attention(q, k, v, s, block_sizes=blocks)
  shapes = [((1, 4096, 8, 128), jnp.bfloat16), ((1, 4096, 2, 128), jnp.bfloat16),
            ((1, 4096, 2, 128), jnp.bfloat16), ((1, 4096), jnp.int32)]
  lowered, compiled = _compile_forward_and_backward(fn, mesh, [P()] * 4, shapes)
  assert lowered.as_text().count("tpu_custom_call") == 3
  assert compiled.memory_analysis() is not None
