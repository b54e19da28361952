"""python -m heph_jax.evaluate --workdir DIR [--step N] | --hf DIR --bfcl PATH
[--categories simple,multiple] [--limit 200]: prints one JSON object of accuracies."""
from __future__ import annotations

import json
import os
import sys

from absl import app, flags, logging

from heph_jax.errors import HephError

flags.DEFINE_string("workdir", None, "heph_jax run directory (its newest checkpoint unless --step).")
flags.DEFINE_integer("step", None, "Checkpoint step of --workdir.")
flags.DEFINE_string("hf", None, "Hugging Face Llama/Mistral directory (instead of --workdir).")
flags.DEFINE_string("tokenizer", None, "sp:PATH or hf:DIR; default: the run's / the HF directory's.")
flags.DEFINE_string("bfcl", None, "bfcl-eval wheel, a directory in its layout or a BFCL_v*_<category>.json file.")
flags.mark_flag_as_required("bfcl")
flags.DEFINE_list("categories", ["simple", "multiple", "parallel", "parallel_multiple", "irrelevance"],
                  "BFCL categories (non-live AST ones).")
flags.DEFINE_integer("limit", None, "At most this many questions per category.")
flags.DEFINE_integer("max_new_tokens", 128, "Generation length limit.")
flags.DEFINE_integer("batch_size", 8, "Prompts decoded together.")
flags.DEFINE_string("out", None, "Write the generations here (JSON Lines).")
FLAGS = flags.FLAGS


def run() -> dict:
  from heph_jax.evaluate import data, load, run as runner
  questions = data.load(FLAGS.bfcl, FLAGS.categories, FLAGS.limit)
  model_cfg, params, tokenizer, step = load.load(FLAGS.workdir, FLAGS.step, FLAGS.hf, FLAGS.tokenizer)
  records, acc = runner.evaluate(model_cfg, params, tokenizer, questions, FLAGS.max_new_tokens, FLAGS.batch_size)
  if FLAGS.out:
    runner.write_jsonl(FLAGS.out, records)
  counts = {c: sum(r["category"] == c for r in records) for c in acc}
  return {"step": step, "accuracy": acc, "num_questions": counts,
          "overall": sum(r["correct"] for r in records) / max(len(records), 1)}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # library INFO lines (Orbax restore) would drown the output
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from heph_jax.parallel.distributed import quiet_libtpu_off_tpu
  quiet_libtpu_off_tpu()
  try:
    print(json.dumps(run()))
  except HephError as e:
    print(f"heph_jax.evaluate: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
