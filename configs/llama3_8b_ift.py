"""Hephaestus Stage III: instruction fine-tuning of the Stage II model (loss on completions only).

    python -m heph_jax.train --config configs/llama3_8b_ift.py --workdir runs/llama3_8b_ift

Trains on Forge `ift` records (the paper's 95K instruction-completion samples) rendered with the
tokenizer's chat template; the loss falls on assistant turns only (data.loss_on="completions").
Assumed, as the paper publishes none of them: 300 steps ~ 3 epochs of 95K samples of ~2K tokens at
the 2.1M-token batch (several samples packed per 8192-token row, attention kept within each),
peak LR 2e-5 with 10 warmup steps, cosine to 0, no weight decay. Model, mesh, batch and remat are
Stage I's (the batch stays a multiple of v5e-256's 256 chips), so Stage I's AOT fit holds.
"""
import ml_collections

from heph_jax.config import sibling

# Stage II's --workdir: its newest checkpoint gives the params.
STAGE2_WORKDIR = "runs/llama3_8b_stage2"


def get_config():
  config = sibling(__file__, "llama3_8b_stage2")
  config.init_from = "ckpt:" + STAGE2_WORKDIR
  config.num_train_steps = 300
  config.eval_every_steps = 50
  config.checkpoint_every_steps = 50
  config.optimizer.update(dict(learning_rate=2e-5, warmup_steps=10, min_lr_ratio=0.0,
                               weight_decay=0.0))
  data = config.data
  data.sources = ml_collections.ConfigDict(dict(ift="data/forge/ift.jsonl"))
  data.domains = ml_collections.ConfigDict(dict(agent=["ift"]))
  data.rates = ml_collections.ConfigDict(dict(ift=1.0))
  data.loss_on = "completions"
  return config
