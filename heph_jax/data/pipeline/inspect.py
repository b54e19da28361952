"""Look at what training will read: examples per task, token shares vs rates, packing efficiency.

    python -m heph_jax.data.inspect --config configs/X.py [--num_batches N] [--json]
        [--examples K] [--max_chars C] [--workdir DIR] [--config.a.b=v ...]

Builds the run's DataPipeline (preparing sources when needed: into WORKDIR/data_cache like the
trainer when --workdir is given, else config.data.cache_dir or ~/.cache/heph_jax), draws N packed
training batches of this host and prints
- K packed segments per task as the model sees them (decoded; tokens that carry loss inside
  [[...]]; segments mixing prompt and completion first, then fully weighted ones),
- every task's measured share of the non-padding tokens next to its configured rate,
- the packing efficiency (non-padding tokens / slots).
--json prints the same as one JSON object.
"""
from __future__ import annotations

import json
import sys

import numpy as np

OPEN, CLOSE = "[[", "]]"


def render_weighted(tokenizer, ids, weights) -> str:
  """Decoded text of `ids`, the runs of tokens with loss weight > 0 wrapped in [[...]].

  Each run is the text that decoding it adds to the decoded prefix, so spaces and multi-token
  characters come out as in the whole decode.
  """
  ids, weighted = list(map(int, ids)), [w > 0 for w in weights]
  out, before = [], ""
  start = 0
  while start < len(ids):
    end = start
    while end < len(ids) and weighted[end] == weighted[start]:
      end += 1
    upto = tokenizer.decode(ids[:end])
    text = upto[len(before):] if upto.startswith(before) else tokenizer.decode(ids[start:end])
    before = upto
    if text:
      out.append(f"{OPEN}{text}{CLOSE}" if weighted[start] else text)
    start = end
  return "".join(out)


def _segments(batch):
  """(task id, tokens, loss weights) of every packed segment, row by row."""
  for row in range(batch["tokens"].shape[0]):
    seg = batch["segment_ids"][row]
    for sid in np.unique(seg[seg > 0]):
      at = seg == sid
      yield (int(batch["task_ids"][row][at][0]), batch["tokens"][row][at],
             batch["loss_weights"][row][at])


def summarize(config, num_batches: int = 20, examples: int = 2, max_chars: int = 1500,
              workdir: str | None = None, log=lambda *_: None) -> dict:
  """The figures `inspect` prints, as a dict (see the module docstring)."""
  from heph_jax import config as config_lib
  from heph_jax.data.pipeline import DataPipeline
  from heph_jax.data.pipeline.config import validate_data_config
  from heph_jax.data.tokenizers import load_tokenizer, tokenizer_spec
  from heph_jax.errors import ConfigError

  if num_batches < 1:
    raise ConfigError(f"--num_batches: must be >= 1, got {num_batches}")
  spec = tokenizer_spec(config.data.tokenizer, str(config.init_from), "")
  if not spec:
    raise ConfigError("config.data.tokenizer: not set (and init_from names no hf: directory)")
  with config.unlocked():
    config.data.tokenizer = spec
  validate_data_config(config.data)
  tokenizer = load_tokenizer(spec)
  if config.per_device_batch_size > 0:
    import jax
    rows = config_lib.global_batch_size(config, jax.device_count())
  else:
    rows = config.global_batch_size
  pipeline = DataPipeline(config, tokenizer, workdir, log=log)
  iterator = pipeline.train_iterator(rows)

  tasks = pipeline.tasks
  tokens = np.zeros(len(tasks), np.int64)
  loss_tokens = np.zeros(len(tasks), np.int64)
  documents = np.zeros(len(tasks), np.int64)
  # Segments to show, best first: prompt and completion (IFT), all weighted, none weighted.
  picked = {t: ([], [], []) for t in tasks}
  slots = 0
  for _ in range(num_batches):
    batch = iterator.next_with_tasks()
    slots += batch["tokens"].size
    real = batch["task_ids"] >= 0
    tokens += np.bincount(batch["task_ids"][real], minlength=len(tasks))
    loss_tokens += np.bincount(batch["task_ids"][real], weights=batch["loss_weights"][real] > 0,
                               minlength=len(tasks)).astype(np.int64)
    for task_id, ids, weights in _segments(batch):
      documents[task_id] += 1
      keep = picked[tasks[task_id]][0 if weights.any() and not weights.all() else
                                     1 if weights.any() else 2]
      if len(keep) < examples:
        text = render_weighted(tokenizer, ids, weights)
        keep.append(text if len(text) <= max_chars else text[:max_chars] + " ...")
  shown = {t: [text for kind in picked[t] for text in kind][:examples] for t in tasks}
  total = max(int(tokens.sum()), 1)
  return {
      "num_batches": num_batches, "rows": iterator.rows, "seq_len": pipeline.seq_len,
      "tokenizer": tokenizer.name, "loss_on": config.data.loss_on,
      "packing_efficiency": float(tokens.sum() / slots),
      "tokens": int(tokens.sum()), "slots": int(slots),
      "tasks": {t: {"rate": float(pipeline.rates[t]), "share": float(tokens[i] / total),
                    "tokens": int(tokens[i]), "loss_tokens": int(loss_tokens[i]),
                    "segments": int(documents[i]),
                    "prepared": pipeline.prepared[t].directory, "examples": shown[t]}
                for i, t in enumerate(tasks)},
  }


def format_text(summary: dict) -> str:
  lines = []
  for task, info in summary["tasks"].items():
    lines.append(f"=== {task}: {len(info['examples'])} example(s); loss-weighted tokens in "
                 f"{OPEN}...{CLOSE}")
    for i, text in enumerate(info["examples"]):
      lines.append(f"--- {task} #{i + 1}")
      lines.append(text)
    if not info["examples"]:
      lines.append(f"(no {task} tokens in {summary['num_batches']} batches)")
    lines.append("")
  lines.append(f"{summary['num_batches']} batches x {summary['rows']} rows x {summary['seq_len']} "
               f"tokens, tokenizer {summary['tokenizer']}, loss_on={summary['loss_on']!r}")
  lines.append(f"{'task':<16}{'rate':>8}{'share':>8}{'diff':>8}{'tokens':>10}{'loss tok':>10}"
               f"{'segments':>10}")
  for task, info in summary["tasks"].items():
    lines.append(f"{task:<16}{info['rate']:>8.3f}{info['share']:>8.3f}"
                 f"{info['share'] - info['rate']:>+8.3f}{info['tokens']:>10}"
                 f"{info['loss_tokens']:>10}"
                 f"{info['segments']:>10}")
  lines.append(f"packing efficiency {summary['packing_efficiency']:.3f} "
               f"({summary['tokens']:,} of {summary['slots']:,} slots hold tokens)")
  return "\n".join(lines)


def define_flags(values, argv):
  from absl import flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                  flag_values=values, lock_config=False, sys_argv=argv)
  flags.DEFINE_integer("num_batches", 20, "Packed training batches to draw.", flag_values=values)
  flags.DEFINE_integer("examples", 2, "Packed segments shown per task.", flag_values=values)
  flags.DEFINE_integer("max_chars", 1500, "Characters shown per document.", flag_values=values)
  flags.DEFINE_string("workdir", None, "Prepare into WORKDIR/data_cache, as the trainer does.",
                      flag_values=values)
  flags.DEFINE_bool("json", False, "Print one JSON object instead of text.", flag_values=values)
  flags.mark_flag_as_required("config", flag_values=values)


def main(argv=None, out=None) -> int:
  import os
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from heph_jax import cli
  out = out or sys.stdout

  def body(args, positional):
    del positional
    log = (lambda *_: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    summary = summarize(args.config, args.num_batches, args.examples, args.max_chars, args.workdir,
                        log=log)
    print(json.dumps(summary) if args.json else format_text(summary), file=out)

  return cli.run("heph_jax.data.inspect", define_flags, body, argv)
