"""Hephaestus-7B (Mistral) Stage I: configs/llama3_8b_stage1.py with Mistral-7B-v0.3 as the base.

    python -m heph_jax.aot --config configs/mistral_7b_stage1.py --topology v5p-64
    python -m heph_jax.train --config configs/mistral_7b_stage1.py --workdir runs/mistral_7b_stage1

Same data, batch, schedule and mesh as the Llama-3 run (assumed likewise: the paper's Table 8 gives
no training settings for its Mistral variant).
"""
from heph_jax.config import sibling

# A local copy of mistralai/Mistral-7B-v0.3 (huggingface-cli download ... --local-dir HF_DIR).
HF_DIR = "hf_models/Mistral-7B-v0.3"


def get_config():
  config = sibling(__file__, "llama3_8b_stage1")
  config.model = sibling(__file__, "mistral_7b").model
  config.init_from = "hf:" + HF_DIR
  config.data.tokenizer = "hf:" + HF_DIR
  return config
