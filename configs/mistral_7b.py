"""Mistral-7B-v0.3 model shape (Mistral's config.json) with pod-scale numerics, as configs/llama3_8b.py.

v0.3: vocabulary 32768 (v0.2's 32000 plus control tokens), rope_theta 1e6, no sliding window
(its config.json sets sliding_window null), 32k context, untied embeddings.
"""
from heph_jax.config import sibling


def get_config():
  config = sibling(__file__, "base")
  config.model.update(dict(
      architecture="mistral",
      vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
      num_attention_heads=32, num_key_value_heads=8, head_dim=0, rms_norm_eps=1e-5,
      rope_theta=1000000.0, rope_scaling=None, max_position_embeddings=32768,
      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
      dtype="bfloat16", param_dtype="float32", attention_impl="pallas", scan_layers=True,
      remat_policy="full",
  ))
  config.seq_len = 8192
  # The loss 1024 positions at a time, as configs/llama3_8b.py (a smaller vocabulary, so a smaller
  # saving: see the fit table in README.md).
  config.loss_chunk_size = 1024
  return config
