"""python -m heph_jax.evaluate --workdir DIR [--step N] | --hf DIR --bfcl PATH
[--categories simple,multiple] [--limit 200]: prints one JSON object of accuracies."""
from __future__ import annotations

import json
import os
import sys

from absl import flags, logging

from heph_jax import cli

PROG = "heph_jax.evaluate"


def define_flags(values, argv):
  del argv
  define = dict(flag_values=values)
  from heph_jax.evaluate.load import define_model_flags
  define_model_flags(values)
  flags.DEFINE_string("bfcl", None, "bfcl-eval wheel, a directory in its layout or a BFCL_v*_<category>.json file.",
                      **define)
  flags.DEFINE_list("categories", ["simple", "multiple", "parallel", "parallel_multiple", "irrelevance"],
                    "BFCL categories (non-live AST ones).", **define)
  flags.DEFINE_integer("limit", None, "At most this many questions per category.", **define)
  flags.DEFINE_integer("max_new_tokens", 128, "Generation length limit.", **define)
  flags.DEFINE_integer("batch_size", 8, "Prompts decoded together.", **define)
  flags.DEFINE_string("out", None, "Write the generations here (JSON Lines).", **define)
  flags.mark_flag_as_required("bfcl", flag_values=values)


def run(args) -> dict:
  from heph_jax.evaluate import data, load, run as runner
  questions = data.load(args.bfcl, args.categories, args.limit)
  model_cfg, params, tokenizer, step = load.load(args.workdir, args.step, args.hf, args.tokenizer)
  records, acc = runner.evaluate(model_cfg, params, tokenizer, questions, args.max_new_tokens, args.batch_size)
  if args.out:
    runner.write_jsonl(args.out, records)
  counts = {c: sum(r["category"] == c for r in records) for c in acc}
  return {"step": step, "accuracy": acc, "num_questions": counts,
          "overall": sum(r["correct"] for r in records) / max(len(records), 1)}


def _evaluate(args, positional) -> int:
  del positional
  logging.set_verbosity(logging.WARNING)  # library INFO lines (Orbax restore) would drown the output
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from heph_jax.parallel.distributed import quiet_libtpu_off_tpu
  quiet_libtpu_off_tpu()
  print(json.dumps(run(args)))
  return 0


def main(argv=None) -> int:
  return cli.run(PROG, define_flags, _evaluate, argv)


if __name__ == "__main__":
  sys.exit(main())
