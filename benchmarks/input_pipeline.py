"""Input-pipeline throughput on the bundled data vs what the tiny train step consumes.

    JAX_PLATFORMS=cpu .venv/bin/python benchmarks/input_pipeline.py [--config configs/tiny.py]
        [--config.a.b=v ...] [--batches 200] [--train_steps 5] [--warmup 2]

Prints one JSON line:
  prepare_seconds            cold preparation of every source (tokenize + write the TFDS datasets)
  time_to_first_batch_s      DataPipeline over the prepared cache -> first packed batch
  tokens_per_s               non-padding tokens per second of packed batches (this host)
  slot_tokens_per_s          batch slots (rows x seq_len) per second, padding included
  packing_efficiency         non-padding tokens / slots
  tokenizer_tokens_per_s     tokenizer throughput as preparation uses it (encode_pieces with
                             offsets) on the rendered bundled records
  train_tokens_per_s         tokens the train step consumes per second (rows x seq_len / step time),
                             the step built as heph_jax/training/build.py builds it, on this
                             machine's real devices, fed real pipeline batches
  pipeline_vs_train_ratio    slot_tokens_per_s / train_tokens_per_s (target: >= 10)
The pipeline is timed alone, then the train step alone: in training they share the CPU.
"""
from __future__ import annotations

import os

import bench_env

bench_env.real_devices()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json
import statistics
import tempfile
import time

from absl import app, flags, logging
from ml_collections import config_flags

_REPO = bench_env.REPO

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", os.path.join(_REPO, "configs", "tiny.py"),
                                "Config file (configs/*.py).", lock_config=False)
flags.DEFINE_integer("batches", 200, "Packed batches timed after the first.")
flags.DEFINE_integer("train_steps", 5, "Timed train steps.")
flags.DEFINE_integer("warmup", 2, "Untimed train steps first (the first compiles).")
flags.DEFINE_bool("allow_loaded", False, "Measure even when the machine is busy (the line says idle: false).")


def rendered_texts(config, tokenizer) -> list[str]:
  """The text of every trainable record of the configured sources, as preparation renders it."""
  from heph_jax.data import forge
  from heph_jax.data.tokenizers.chat_template import render_record
  from heph_jax.data.pipeline.config import source_files
  texts = []
  for task in config.data.sources.keys():
    for path in source_files(config.data, task):
      for record in forge.read_records(path, on_error=config.data.on_error).records:
        if forge.is_train(record):
          texts.append("".join(text for text, _ in render_record(record, tokenizer)))
  return texts


def time_pipeline(config, tokenizer, rows: int, batches: int) -> dict:
  import seqio  # noqa: F401  (imports are not preparation time)
  import tensorflow_datasets  # noqa: F401
  from heph_jax.data.prepare import tfds_builder as tfds_forge  # noqa: F401
  from heph_jax.data.pipeline import DataPipeline
  quiet = lambda *_: None  # noqa: E731
  with tempfile.TemporaryDirectory() as cache:
    with config.unlocked():
      config.data.cache_dir = cache
    start = time.perf_counter()
    DataPipeline(config, tokenizer, log=quiet)  # cold: prepares every source
    prepare_seconds = time.perf_counter() - start

    start = time.perf_counter()
    iterator = DataPipeline(config, tokenizer, log=quiet).train_iterator(rows)
    first = next(iterator)
    first_batch_seconds = time.perf_counter() - start

    tokens = slots = 0
    start = time.perf_counter()
    for _ in range(batches):
      batch = next(iterator)
      tokens += int((batch["segment_ids"] > 0).sum())
      slots += batch["tokens"].size
    seconds = time.perf_counter() - start
  return {"prepare_seconds": prepare_seconds, "time_to_first_batch_s": first_batch_seconds,
          "tokens_per_s": tokens / seconds, "slot_tokens_per_s": slots / seconds,
          "packing_efficiency": tokens / slots, "timed_batches": batches, "first_batch": first,
          "iterator": iterator}


def time_train_step(config, iterator, steps: int, warmup: int) -> dict:
  """Seconds per step of the run's jitted train step on real pipeline batches."""
  import flax.linen as nn
  import jax
  from heph_jax.parallel.mesh import make_mesh, rules_tuple
  from heph_jax.training import build, state as state_lib
  mesh = make_mesh(config.mesh)
  program = build.build_train_step(config, mesh)
  batches = [next(iterator) for _ in range(warmup + steps)]
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules_tuple(config.logical_axis_rules)):
    state = state_lib.create_state(program.model_cfg, program.tx, jax.random.PRNGKey(config.seed),
                                   program.shardings)
    times = []
    for i, host in enumerate(batches):
      batch = {k: jax.make_array_from_process_local_data(program.batch_sharding, v)
               for k, v in host.items()}
      start = time.perf_counter()
      state, metrics = program.train_step(state, batch)
      jax.block_until_ready((state, metrics))
      if i >= warmup:
        times.append(time.perf_counter() - start)
  step_seconds = statistics.median(times)
  return {"train_step_seconds": step_seconds,
          "train_tokens_per_s": program.batch_size * config.seq_len / step_seconds,
          "train_devices": jax.device_count(), "train_params": program.model_cfg.num_params(),
          "train_step_seconds_all": [round(t, 4) for t in times]}


def run(config, batches: int, train_steps: int, warmup: int) -> dict:
  import jax
  from heph_jax import config as config_lib
  from heph_jax.data.tokenizers import load_tokenizer, measure_tokens_per_second
  config_lib.validate(config, jax.device_count())
  tokenizer = load_tokenizer(config.data.tokenizer)
  rows = config_lib.global_batch_size(config, jax.device_count())

  pipeline = time_pipeline(config, tokenizer, rows, batches)
  iterator = pipeline.pop("iterator")
  pipeline.pop("first_batch")
  texts = rendered_texts(config, tokenizer)
  tokenizer_speed = measure_tokens_per_second(tokenizer, texts, with_offsets=True)
  train = time_train_step(config, iterator, train_steps, warmup)
  return {
      **pipeline,
      "tokenizer_tokens_per_s": tokenizer_speed["tokens_per_s"],
      "tokenizer_texts": tokenizer_speed["texts"], "tokenizer_tokens": tokenizer_speed["tokens"],
      **train,
      "pipeline_vs_train_ratio": pipeline["slot_tokens_per_s"] / train["train_tokens_per_s"],
      "pipeline_nonpad_vs_train_ratio": pipeline["tokens_per_s"] / train["train_tokens_per_s"],
      "rows": rows, "seq_len": config.seq_len, "tasks": list(config.data.sources.keys()),
      "tokenizer": tokenizer.name, "cpu_threads": len(os.sched_getaffinity(0)),
      "load_average": os.getloadavg()[0], "jax": jax.__version__,
  }


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # seqio / TFDS log every dataset they open at INFO
  load = bench_env.machine_load()
  bench_env.refuse_if_loaded(load, FLAGS.allow_loaded, "benchmarks/input_pipeline.py")
  result = run(FLAGS.config, FLAGS.batches, FLAGS.train_steps, FLAGS.warmup)
  print(json.dumps({**result, "load_at_start": load}), flush=True)


if __name__ == "__main__":
  app.run(main)
