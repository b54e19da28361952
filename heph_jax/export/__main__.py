"""Export a heph_jax training checkpoint as a Hugging Face model directory.

    python -m heph_jax.export --workdir WORKDIR [--step N] --out OUT_DIR [--dtype bfloat16]

Writes safetensors shards (+ index), config.json, generation_config.json and the run's tokenizer
files (config.data.tokenizer), so that AutoModelForCausalLM / AutoTokenizer.from_pretrained(OUT_DIR)
load the model and encode text to the ids it was trained on.

Runs on the host CPU (JAX_PLATFORMS=cpu unless set otherwise): an export needs no accelerator, a
TPU in use by a training job cannot be opened twice, and host memory holds what one chip may not
(Llama-3-8B in float32: 32 GB).
"""
from __future__ import annotations

import os
import sys

from absl import flags

from heph_jax import cli
from heph_jax.export.hf_config import HFCheckpointError

PROG = "heph_jax.export"


def define_flags(values, argv):
  del argv
  flags.DEFINE_string("workdir", None, "training run directory (holding checkpoints/), or WORKDIR@STEP",
                      flag_values=values)
  flags.DEFINE_integer("step", None, "checkpoint step (default: the newest)", flag_values=values)
  flags.DEFINE_string("out", None, "output directory (Hugging Face layout)", flag_values=values)
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"],
                    "dtype of the exported tensors (default float32: lossless)", flag_values=values)
  flags.DEFINE_string("tokenizer", None, "tokenizer spec ('sp:PATH' or 'hf:DIR') instead of the run's "
                      "config.data.tokenizer, e.g. when run from another directory", flag_values=values)
  flags.DEFINE_integer("max_shard_bytes", None,
                       "size limit of one safetensors file (default 5e9, as transformers)",
                       flag_values=values)
  for name in ("workdir", "out"):
    flags.mark_flag_as_required(name, flag_values=values)


def export(workdir: str, out: str, step=None, dtype: str = "float32", tokenizer_spec=None,
           max_shard_bytes=None) -> int:
  """Writes the HF directory for a run's checkpoint; returns the exported step."""
  from heph_jax.data.tokenizers import load_tokenizer
  from heph_jax.export import hf
  from heph_jax.training.checkpoint import restore_params

  config, model_cfg, params, step = restore_params(workdir, step=step)
  spec = tokenizer_spec or (config.data.get("tokenizer") if "data" in config else None)
  tokenizer = load_tokenizer(spec) if spec else None
  kwargs = {"max_shard_bytes": max_shard_bytes} if max_shard_bytes else {}
  hf.save(model_cfg, params, out, tokenizer=tokenizer, dtype=dtype, **kwargs)
  return step


def _export(args, positional) -> int:
  del positional
  from heph_jax.data.tokenizers import TokenizerError
  try:
    step = export(args.workdir, args.out, args.step, args.dtype, args.tokenizer, args.max_shard_bytes)
  except TokenizerError as e:
    if args.tokenizer:
      raise
    raise TokenizerError(f"{e} (the run's config.data.tokenizer; pass --tokenizer SPEC to use "
                         "another path)") from None
  except FileNotFoundError as e:
    raise HFCheckpointError(str(e)) from None
  print(f"{PROG}: wrote step {step} of {args.workdir} to {args.out} ({args.dtype})")
  return 0


def main(argv=None) -> int:
  return cli.run(PROG, define_flags, _export, argv)


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before JAX starts (see the module doc)
  sys.exit(main())
