"""CPU demo: a ~1M-parameter Llama on the bundled Forge sample; a few minutes on 2 cores."""
from heph_jax.config import sibling


def get_config():
  config = sibling(__file__, "base")
  config.num_train_steps = 300
  config.log_every_steps = 10
  config.eval_every_steps = 100
  config.eval_batches = 2
  config.checkpoint_every_steps = 100
  config.global_batch_size = 8
  config.seq_len = 256
  config.optimizer.learning_rate = 3e-3
  config.optimizer.warmup_steps = 20
  config.model.update(dict(
      vocab_size=2048, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
      dtype="float32",  # bf16 matmuls are slow on CPUs
      # On XLA:CPU ~10 % faster than no remat: the layer scan stacks only the weight matmuls'
      # outputs and recomputes the elementwise rest (benchmarks/README.md).
      remat_policy="dots_no_batch",
  ))
  return config
