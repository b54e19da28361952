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

import argparse
import os
import sys

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m heph_jax.export",
                                   description="Export a heph_jax checkpoint in Hugging Face format.")
  parser.add_argument("--workdir", required=True,
                      help="training run directory (holding checkpoints/), or WORKDIR@STEP")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
  parser.add_argument("--out", required=True, help="output directory (Hugging Face layout)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                      help="dtype of the exported tensors (default float32: lossless)")
  parser.add_argument("--tokenizer", default=None,
                      help="tokenizer spec ('sp:PATH' or 'hf:DIR') instead of the run's "
                           "config.data.tokenizer, e.g. when run from another directory")
  parser.add_argument("--max-shard-bytes", type=int, default=None,
                      help="size limit of one safetensors file (default 5e9, as transformers)")
  return parser


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


def main(argv=None) -> int:
  args = _parser().parse_args(argv)
  from heph_jax.data.tokenizers import TokenizerError
  from heph_jax.errors import HephError
  try:
    step = export(args.workdir, args.out, args.step, args.dtype, args.tokenizer, args.max_shard_bytes)
  except (FileNotFoundError, HephError) as e:
    hint = ""
    if isinstance(e, TokenizerError) and not args.tokenizer:
      hint = " (the run's config.data.tokenizer; pass --tokenizer SPEC to use another path)"
    print(f"heph_jax.export: {e}{hint}", file=sys.stderr)
    return EXIT_USAGE
  print(f"heph_jax.export: wrote step {step} of {args.workdir} to {args.out} ({args.dtype})")
  return 0


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before JAX starts (see the module doc)
  sys.exit(main())
