"""~1.1B-parameter Llama (TinyLlama-1.1B's shape: 22 layers x 2048 wide, GQA 32:4, 32k vocab) at
seq 2048, for benchmarks/accelerator_step.py on one accelerator (benchmarks/device_check.sh).

bfloat16 compute, float32 params and Adam moments (~18 GB of state), remat "dots_no_batch",
8 sequences per device. attention_impl "xla" runs everywhere; device_check.sh switches a TPU to
"pallas" (the Mosaic kernels are TPU-only).
"""
from heph_jax.config import sibling


def get_config():
  config = sibling(__file__, "base")
  config.seq_len = 2048
  config.global_batch_size = 0
  config.per_device_batch_size = 8
  config.num_train_steps = 1000
  config.model.update(dict(
      vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
      num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=4096,
      dtype="bfloat16", remat_policy="dots_no_batch", attention_impl="xla",
  ))
  return config
