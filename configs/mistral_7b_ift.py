"""Hephaestus-7B (Mistral) instruction fine-tuning: configs/llama3_8b_ift.py from Mistral Stage II."""
from heph_jax.config import sibling

STAGE2_WORKDIR = "runs/mistral_7b_stage2"


def get_config():
  config = sibling(__file__, "llama3_8b_ift")
  mistral = sibling(__file__, "mistral_7b_stage1")
  config.model = mistral.model
  config.data.tokenizer = mistral.data.tokenizer
  config.init_from = "ckpt:" + STAGE2_WORKDIR
  return config
