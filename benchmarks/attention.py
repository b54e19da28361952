"""Attention forward+backward: memory and time of the Pallas flash kernel, the C++ CPU kernel and
the model's XLA path.

    .venv/bin/python benchmarks/attention.py [--seqs 1024,2048,4096,8192] [--heads 2 --kv_heads 1
        --head_dim 128 --batch 1] [--repeats 3] [--tpu v5e]   # --tpu "" skips the TPU figures

Prints one JSON line per sequence length. Measured: one jitted step computing the loss
sum(attention(q, k, v) * cotangent) and its gradients for q, k and v (causal, packed segment ids).

  cpu.*       this machine. Memory is XLA:CPU's compiled memory analysis (temp_bytes: buffers
              beyond arguments and outputs). Time is the median wall time over --repeats rounds
              that alternate pallas and xla, so load from other processes hits both alike. The Pallas
              kernel runs in interpret mode on CPU (a plain XLA loop over its grid): its times are
              only indicative of nothing on TPU. The C++ kernel (attention_impl="cpu") keeps its
              scratch outside XLA's buffers, so its temp_bytes leave out ~2 x (64 + 2 x head_dim)
              x seq floats per thread (linear in seq).
  tpu_<gen>.* AOT-compiled by libtpu for one chip of that TPU generation, the real Mosaic kernel
              against XLA:TPU, bfloat16: peak_bytes (the compiler's peak) and temp_bytes. No timing.
  device      with --on_device: fwd+bwd seconds on the default accelerator (pallas on TPU, xla
              elsewhere) for the packed rows against one document per row (median of --repeats);
              the CPU and AOT figures are skipped (benchmarks/device_check.sh).
  pallas_blocks  the (query block, key block) tiles the Pallas kernels compute (their own count,
              interpret mode) for rows packed with --doc_len-token documents against one document
              and against causal-only skipping (no segment ids), with the block sizes a run on
              --tpu's generation gets by default: packed_over_causal is the work segment skipping
              saves (forward + dq + dk/dv).
The figures the benchmark exists for: temp bytes must grow linearly with seq for pallas (x2 per
doubling, see *_growth) and quadratically for xla (x4); packed rows must cost the kernels a
fraction of the causal triangle.
"""
from __future__ import annotations

import os

import bench_env

bench_env.real_devices()  # the real CPU cores as one device; libtpu only compiles here
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from heph_jax.kernels.cpu_attention import cpu_attention
from heph_jax.kernels.flash_attention import computed_blocks, flash_attention, resolve_block_sizes
from heph_jax.kernels.xla_attention import xla_attention

IMPLS = {"pallas": flash_attention, "xla": xla_attention, "cpu": cpu_attention}
CPU_IMPLS = ("pallas", "xla", "cpu")
TPU_IMPLS = ("pallas", "xla")  # the C++ kernel is for XLA:CPU only
TOPOLOGIES = {"v5e": ("v5e:2x2", "default"), "v5p": ("v5:2x2x1", "megacore"),
              "v6e": ("v6e:2x2", "default")}


def packed_segments(batch, seq, seed=0):
  """A few documents per row and a padding tail (id 0) on every other row."""
  rng = np.random.default_rng(seed)
  ids = np.zeros((batch, seq), np.int32)
  for row in range(batch):
    used = seq - (int(rng.integers(1, seq // 8)) if row % 2 else 0)
    cuts = np.sort(rng.choice(np.arange(1, used), size=3, replace=False))
    ids[row, :used] = np.searchsorted(cuts, np.arange(used), side="right") + 1
  return ids


def step_fn(impl, **kwargs):
  def loss(q, k, v, segment_ids, cotangent):
    out = IMPLS[impl](q, k, v, segment_ids, causal=True, **kwargs)
    return jnp.sum(out.astype(jnp.float32) * cotangent)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def shapes(args, seq, dtype, sharding=None):
  tile = lambda heads: jax.ShapeDtypeStruct((args.batch, seq, heads, args.head_dim), dtype,
                                            sharding=sharding)
  return (tile(args.heads), tile(args.kv_heads), tile(args.kv_heads),
          jax.ShapeDtypeStruct((args.batch, seq), jnp.int32, sharding=sharding),
          jax.ShapeDtypeStruct((args.batch, seq, args.heads, args.head_dim), jnp.float32,
                               sharding=sharding))


def memory(compiled):
  stats = compiled.memory_analysis()
  return {"temp_bytes": int(stats.temp_size_in_bytes),
          "peak_bytes": int(getattr(stats, "peak_memory_in_bytes", 0) or 0)}


def cpu_figures(args, seq):
  dtype = jnp.dtype(args.cpu_dtype)
  keys = jax.random.split(jax.random.PRNGKey(seq), 4)
  q, k, v, _, cotangent = shapes(args, seq, dtype)
  inputs = (jax.random.normal(keys[0], q.shape, dtype), jax.random.normal(keys[1], k.shape, dtype),
            jax.random.normal(keys[2], v.shape, dtype), jnp.asarray(packed_segments(args.batch, seq)),
            jax.random.normal(keys[3], cotangent.shape, jnp.float32))
  compiled, figures = {}, {}
  for impl in CPU_IMPLS:
    start = time.perf_counter()
    compiled[impl] = step_fn(impl).lower(*inputs).compile()
    figures[impl] = {**memory(compiled[impl]), "compile_seconds": time.perf_counter() - start}
    jax.block_until_ready(compiled[impl](*inputs))  # warm-up
  times = {impl: [] for impl in CPU_IMPLS}
  for _ in range(args.repeats):
    for impl in CPU_IMPLS:
      start = time.perf_counter()
      jax.block_until_ready(compiled[impl](*inputs))
      times[impl].append(time.perf_counter() - start)
  for impl in CPU_IMPLS:
    figures[impl]["seconds"] = statistics.median(times[impl])
  figures["xla_over_cpu_seconds"] = round(figures["xla"]["seconds"] / figures["cpu"]["seconds"], 2)
  return figures


def tpu_figures(args, seq, generation):
  from jax.experimental.topologies import get_topology_desc
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  name, chip_config = TOPOLOGIES[generation]
  devices = get_topology_desc(platform="tpu", topology_name=name, chip_config_name=chip_config,
                              chips_per_host_bounds=(2, 2, 1), num_slices=1).devices
  mesh = Mesh(np.array(devices[:1]), ("x",))
  figures = {}
  for impl in TPU_IMPLS:
    with jax.set_mesh(mesh):
      lowered = step_fn(impl).lower(*shapes(args, seq, jnp.bfloat16, NamedSharding(mesh, P())))
    try:
      figures[impl] = memory(lowered.compile())
    except Exception as e:  # an HBM overflow is a figure too
      figures[impl] = {"error": str(e).splitlines()[0][:200]}
  return figures


def block_figures(args, seq):
  kind = {"v5e": "TPU v5 lite", "v5p": "TPU v5", "v6e": "TPU v6 lite"}.get(args.tpu, "")
  blocks = resolve_block_sizes((), device_kind=kind, seq_len=seq, head_dim=args.head_dim)
  q = jnp.zeros((1, seq, 1, args.head_dim), jnp.bfloat16)
  docs = np.minimum(np.arange(seq) // args.doc_len + 1, seq // args.doc_len).astype(np.int32)
  rows = {"causal_only": None, f"documents_of_{args.doc_len}": jnp.asarray(docs)[None],
          "one_document": jnp.ones((1, seq), jnp.int32)}
  figures = {"block_sizes": list(blocks.values()), "generation": args.tpu or "default"}
  for name, segment_ids in rows.items():
    figures[name] = computed_blocks(q, q, q, segment_ids, block_sizes=blocks)
  packed = figures[f"documents_of_{args.doc_len}"]["total"]
  figures["packed_over_causal"] = round(packed / figures["causal_only"]["total"], 4)
  figures["one_document_over_causal"] = round(
      figures["one_document"]["total"] / figures["causal_only"]["total"], 4)
  return figures


def device_figures(args, seq):
  impl = "pallas" if jax.default_backend() == "tpu" else "xla"
  dtype = jnp.bfloat16
  keys = jax.random.split(jax.random.PRNGKey(seq), 4)
  q, k, _, _, cotangent = shapes(args, seq, dtype)
  inputs = [jax.random.normal(keys[0], q.shape, dtype), jax.random.normal(keys[1], k.shape, dtype),
            jax.random.normal(keys[2], k.shape, dtype)]
  docs = np.minimum(np.arange(seq) // args.doc_len + 1, seq // args.doc_len).astype(np.int32)
  rows = {"packed": np.tile(docs, (args.batch, 1)), "one_document": np.ones((args.batch, seq), np.int32)}
  kind = jax.devices()[0].device_kind
  blocks = {}
  if impl == "pallas":  # the blocks a run on this generation gets
    blocks["block_sizes"] = resolve_block_sizes((), device_kind=kind, seq_len=seq, head_dim=args.head_dim)
  step = step_fn(impl, **blocks)
  figures = {"impl": impl, "device_kind": kind}
  for name, ids in rows.items():
    call = (*inputs, jnp.asarray(ids), jax.random.normal(keys[3], cotangent.shape, jnp.float32))
    jax.block_until_ready(step(*call))
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      jax.block_until_ready(step(*call))
      times.append(time.perf_counter() - start)
    figures[f"{name}_seconds"] = statistics.median(times)
  figures["one_document_over_packed"] = round(figures["one_document_seconds"] /
                                              figures["packed_seconds"], 2)
  return figures


def growth(previous, current, key):
  try:
    impls = [impl for impl in IMPLS if impl in current]
    return {impl: round(current[impl][key] / previous[impl][key], 2) for impl in impls}
  except (KeyError, TypeError, ZeroDivisionError):
    return None


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seqs", default="1024,2048,4096,8192")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--heads", type=int, default=2)
  parser.add_argument("--kv_heads", type=int, default=1)
  parser.add_argument("--head_dim", type=int, default=128)
  parser.add_argument("--cpu_dtype", default="float32", help="bf16 matmuls are slow on CPU")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--tpu", default="v5e", help="TPU generation for AOT memory; '' to skip")
  parser.add_argument("--on_device", action="store_true",
                      help="time on the default accelerator instead of the CPU and AOT figures")
  parser.add_argument("--doc_len", type=int, default=512, help="document length of the packed rows "
                      "whose computed blocks pallas_blocks counts")
  args = parser.parse_args()
  if args.tpu and args.tpu not in TOPOLOGIES:
    parser.error(f"--tpu must be one of {sorted(TOPOLOGIES)} or '', got {args.tpu!r}")
  try:
    import libtpu  # noqa: F401
  except ImportError:
    args.tpu = ""

  if args.on_device:
    for seq in (int(s) for s in args.seqs.split(",")):
      print(json.dumps({"benchmark": "attention_fwd_bwd_device", "seq": seq, "batch": args.batch,
                        "heads": args.heads, "kv_heads": args.kv_heads, "head_dim": args.head_dim,
                        "doc_len": args.doc_len, "device": device_figures(args, seq),
                        "pallas_blocks": block_figures(args, seq)}), flush=True)
    return
  previous = None
  for seq in (int(s) for s in args.seqs.split(",")):
    line = {"benchmark": "attention_fwd_bwd", "seq": seq, "batch": args.batch, "heads": args.heads,
            "kv_heads": args.kv_heads, "head_dim": args.head_dim, "causal": True,
            "cpu_dtype": args.cpu_dtype, "cpu": cpu_figures(args, seq),
            "note": "cpu pallas = interpret mode (an XLA loop), times only indicative"}
    line["cpu"]["xla_over_pallas_temp_bytes"] = round(
        line["cpu"]["xla"]["temp_bytes"] / max(line["cpu"]["pallas"]["temp_bytes"], 1), 2)
    line["pallas_blocks"] = block_figures(args, seq)
    if args.tpu:
      line[f"tpu_{args.tpu}"] = tpu_figures(args, seq, args.tpu)
    if previous is not None:
      line["cpu_temp_growth"] = growth(previous["cpu"], line["cpu"], "temp_bytes")
      if args.tpu:
        line[f"tpu_{args.tpu}_peak_growth"] = growth(previous[f"tpu_{args.tpu}"],
                                                     line[f"tpu_{args.tpu}"], "peak_bytes")
    print(json.dumps(line), flush=True)
    previous = line


if __name__ == "__main__":
  main()
