"""~50M-parameter Llama at seq 512 for benchmarks/train_step.py (CPU): 6 layers x 512 wide, 32k vocab.

21M parameters in the layers, 33M in the (untied) embedding and output projection. Measured choices
for XLA:CPU (benchmarks/README.md): the C++ attention kernel (attention_impl="cpu": ~11 % faster
step than "xla"), float32 compute (bfloat16 is no faster there) and remat policy "dots_no_batch"
(~6 % faster than none: the layer scan then stacks only the weight matmuls' outputs, not every
elementwise intermediate; the rest is recomputed within fused loops).
"""
from heph_jax.config import sibling


def get_config():
  config = sibling(__file__, "base")
  config.seq_len = 512
  config.global_batch_size = 8
  config.num_train_steps = 1000
  config.model.update(dict(
      vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=6,
      num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048,
      dtype="float32", remat_policy="dots_no_batch", attention_impl="cpu",
  ))
  return config
