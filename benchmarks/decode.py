"""Greedy decoding: tokens/s with the KV cache (heph_jax/model/decode.py) against re-running the
full forward over the whole sequence for every new token, same process, at a few batch sizes;
and the AOT compile of one decode step (one token over the cache) for a TPU topology via libtpu.

    .venv/bin/python benchmarks/decode.py [--batches 1,4,16] [--prompt_len 128 --new_tokens 64]
        [--hidden 256 --layers 4 --heads 8 --kv_heads 2 --vocab 4096] [--repeats 3] [--tpu v5e-4]
        # --tpu "" skips the AOT figures

One JSON line per batch size: kv_cache.tokens_per_s, full_forward.tokens_per_s (medians over
--repeats, after a compile run), their ratio (the figure this exists for) and same_tokens (both
paths emit identical greedy tokens). Then one line for the AOT decode step: compile seconds, peak
and temp bytes per chip, FLOPs per step.
"""
from __future__ import annotations

import os

import bench_env

bench_env.real_devices()
for _key, _value in (("TPU_SKIP_MDS_QUERY", "1"), ("TPU_WORKER_HOSTNAMES", "localhost"),
                     ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")):
  os.environ.setdefault(_key, _value)

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from heph_jax.model import decode, llama
from heph_jax.model.config import ModelConfig


def full_forward_generate(cfg, params, tokens, new_tokens):
  """Greedy without a cache: the whole [B, P + N] buffer through the model for every token."""
  b, p = tokens.shape
  buf = jnp.concatenate([tokens, jnp.zeros((b, new_tokens), jnp.int32)], axis=1)

  def body(i, buf):
    logits = llama.apply(cfg, params, buf)  # causal: later (zero) slots do not affect p + i - 1
    nxt = jnp.argmax(jax.lax.dynamic_index_in_dim(logits, p + i - 1, axis=1, keepdims=False), axis=-1)
    return jax.lax.dynamic_update_slice_in_dim(buf, nxt.astype(jnp.int32)[:, None], p + i, axis=1)

  return jax.lax.fori_loop(0, new_tokens, body, buf)[:, p:]


def _time(fn, repeats):
  out = jax.block_until_ready(fn())  # compile + warm-up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times), out


def cpu_line(cfg, params, batch, args):
  tokens = jnp.asarray(np.random.RandomState(batch).randint(3, cfg.vocab_size, (batch, args.prompt_len)),
                       jnp.int32)
  pad = jnp.zeros((batch,), jnp.int32)
  sampling = decode.Sampling(max_new_tokens=args.new_tokens)
  cached = jax.jit(lambda p, t: decode.decode(cfg, p, t, pad, jax.random.PRNGKey(0), sampling)[0])
  full = jax.jit(lambda p, t: full_forward_generate(cfg, p, t, args.new_tokens))
  t_cache, out_cache = _time(lambda: cached(params, tokens), args.repeats)
  t_full, out_full = _time(lambda: full(params, tokens), args.repeats)
  n = batch * args.new_tokens
  return {"benchmark": "decode", "batch": batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
          "kv_cache": {"seconds": t_cache, "tokens_per_s": n / t_cache},
          "full_forward": {"seconds": t_full, "tokens_per_s": n / t_full},
          "kv_cache_over_full_forward": round(t_full / t_cache, 2),
          "same_tokens": bool(np.array_equal(np.asarray(out_cache), np.asarray(out_full)))}


def tpu_line(cfg, args):
  """AOT-compile one decode step (forward of one token over the cache, then argmax) for --tpu."""
  import flax.linen as nn
  from configs import base
  from heph_jax.parallel import topology as topology_lib
  from heph_jax.parallel.mesh import logical_to_sharding, make_mesh, rules_tuple
  topo = topology_lib.parse(args.tpu)
  devices = topology_lib.topology_devices(topo)
  mesh = make_mesh(dict(dcn_data=1, data=1, fsdp=-1, tensor=1), devices)
  rules = base.get_config().logical_axis_rules
  cfg = cfg.replace(dtype="bfloat16")
  batch = max(int(b) for b in args.batches.split(","))
  batch = -(-batch // len(devices)) * len(devices)  # the batch axis is split over every chip (fsdp)
  seq = args.prompt_len + args.new_tokens
  shapes = jax.eval_shape(lambda: llama.init(cfg, jax.random.PRNGKey(0)))
  shards = logical_to_sharding(llama.logical_axes(cfg), mesh, rules)
  params = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shards)
  cache_sharding = logical_to_sharding(decode._CACHE_AXES, mesh, rules)  # pylint: disable=protected-access
  cache_shape = (cfg.num_hidden_layers, batch, seq, cfg.num_key_value_heads, cfg.head_dim)
  cache = {k: jax.ShapeDtypeStruct(cache_shape, jnp.bfloat16, sharding=cache_sharding) for k in ("k", "v")}
  row = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  last = jax.ShapeDtypeStruct((batch, 1), jnp.int32, sharding=row)
  pad = jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=row)

  def step(params, last, cache, pad):
    pos = jnp.full(last.shape, seq - 1, jnp.int32)
    logits, cache = decode.forward(cfg, params, last, pos, cache, seq - 1, pad)
    return jnp.argmax(logits[:, 0], axis=-1), cache

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules_tuple(rules)):
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=2).lower(params, last, cache, pad).compile()
    seconds = time.perf_counter() - start
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return {"benchmark": "decode_step_aot", "topology": args.tpu, "chips": len(devices), "batch": batch,
          "cache_len": seq, "dtype": "bfloat16", "compile_seconds": round(seconds, 2),
          "peak_bytes": getattr(mem, "peak_memory_in_bytes", None), "temp_bytes": mem.temp_size_in_bytes,
          "flops_per_chip": cost.get("flops")}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batches", default="1,4,16")
  parser.add_argument("--prompt_len", type=int, default=128)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--hidden", type=int, default=256)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--kv_heads", type=int, default=2)
  parser.add_argument("--vocab", type=int, default=4096)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--tpu", default="v5e-4", help="gcloud accelerator type for the AOT step; '' to skip")
  args = parser.parse_args()
  cfg = ModelConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                    num_hidden_layers=args.layers, num_attention_heads=args.heads,
                    num_key_value_heads=args.kv_heads, max_position_embeddings=4096, dtype="float32")
  params = llama.init(cfg, jax.random.PRNGKey(0))
  for batch in (int(b) for b in args.batches.split(",")):
    print(json.dumps(cpu_line(cfg, params, batch, args)), flush=True)
  if args.tpu:
    try:
      import libtpu  # noqa: F401
    except ImportError:
      print(json.dumps({"benchmark": "decode_step_aot", "skipped": "libtpu is not installed"}))
      return
    print(json.dumps(tpu_line(cfg, args)), flush=True)


if __name__ == "__main__":
  main()
