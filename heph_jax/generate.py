"""python -m heph_jax.generate --workdir DIR [--step N] | --hf DIR --prompt "..." [--max_new_tokens 64]
[--temperature 0.7 --top_p 0.9] [--chat]: a quick look at what a checkpoint writes (prints the text)."""
from __future__ import annotations

import os
import sys

from absl import flags, logging

from heph_jax import cli

PROG = "heph_jax.generate"


def define_flags(values, argv):
  del argv
  define = dict(flag_values=values)
  from heph_jax.evaluate.load import define_model_flags
  define_model_flags(values)
  flags.DEFINE_multi_string("prompt", None, "Prompt text (repeat for a batch).", **define)
  flags.DEFINE_bool("chat", False, "Wrap each prompt as a user turn (chat template, else forge-v1).", **define)
  flags.DEFINE_integer("max_new_tokens", 64, "Generation length limit.", **define)
  flags.DEFINE_float("temperature", 0.0, "0 = greedy.", **define)
  flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (with temperature > 0).", **define)
  flags.DEFINE_integer("seed", 0, "Sampling seed.", **define)
  flags.mark_flag_as_required("prompt", flag_values=values)


def _prompt_text(prompt: str, tokenizer, chat: bool) -> str:
  if not chat:
    return prompt
  from heph_jax.evaluate import prompts
  from heph_jax.evaluate.data import Question
  return prompts.render_prompt(Question("prompt", "", [{"role": "user", "content": prompt}], [], None), tokenizer)


def run(args) -> list[str]:
  import jax
  from heph_jax.evaluate import load, prompts
  from heph_jax.model import decode
  model_cfg, params, tokenizer, _ = load.load(args.workdir, args.step, args.hf, args.tokenizer)
  ids = []
  for prompt in args.prompt:
    row = tokenizer.encode(_prompt_text(prompt, tokenizer, args.chat))
    ids.append(([tokenizer.bos_id] if tokenizer.bos_id is not None else []) + row)
  sampling = decode.Sampling(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                             eos_ids=prompts.stop_ids(tokenizer), pad_id=tokenizer.pad_id)
  outs = decode.generate(model_cfg, params, ids, sampling, rng=jax.random.PRNGKey(args.seed))
  stops = prompts.stop_strings(tokenizer) if args.chat else []
  return [decode.truncate_at_stop(tokenizer.decode([t for t in out if t not in sampling.eos_ids]), stops)[0]
          for out in outs]


def _generate(args, positional) -> int:
  del positional
  logging.set_verbosity(logging.WARNING)  # library INFO lines (Orbax restore) would drown the output
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from heph_jax.parallel.distributed import quiet_libtpu_off_tpu
  quiet_libtpu_off_tpu()
  for text in run(args):
    print(text)
  return 0


def main(argv=None) -> int:
  return cli.run(PROG, define_flags, _generate, argv)


if __name__ == "__main__":
  sys.exit(main())
