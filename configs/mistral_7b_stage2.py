"""Hephaestus-7B (Mistral) Stage II: configs/llama3_8b_stage2.py from the Mistral Stage I run."""
from heph_jax.config import sibling

STAGE1_WORKDIR = "runs/mistral_7b_stage1"


def get_config():
  config = sibling(__file__, "llama3_8b_stage2")
  mistral = sibling(__file__, "mistral_7b_stage1")
  config.model = mistral.model
  config.data.tokenizer = mistral.data.tokenizer
  config.init_from = "ckpt:" + STAGE1_WORKDIR
  return config
