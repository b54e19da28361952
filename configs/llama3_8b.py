"""Llama-3-8B model shape (Meta's config.json) with pod-scale numerics; stage configs build on it.

Llama-3 (not 3.1): rope_theta 500000 without rope scaling (the "llama3" scaling is Llama-3.1's),
8192-token context, untied embeddings. Numerics for TPU pods: bf16 compute, f32 params and Adam
state, Pallas flash attention (XLA attention would hold [B, H, S, S] scores), layers scanned with
full rematerialization.
"""
from heph_jax.config import sibling


def get_config():
  config = sibling(__file__, "base")
  config.model.update(dict(
      architecture="llama",
      vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
      num_attention_heads=32, num_key_value_heads=8, head_dim=0, rms_norm_eps=1e-5,
      rope_theta=500000.0, rope_scaling=None, max_position_embeddings=8192,
      tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001,
      dtype="bfloat16", param_dtype="float32", attention_impl="pallas", scan_layers=True,
      remat_policy="full",
  ))
  config.seq_len = 8192
  # The loss 1024 positions at a time: whole [B, S, vocab] f32 logits would be most of the peak
  # HBM (Llama-3-8B Stage I on v5p-64: 68.2 -> 33.7 GiB/chip with chunks; heph_jax.aot).
  config.loss_chunk_size = 1024
  return config
