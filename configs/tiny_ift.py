"""CPU demo, Stage III: instruction fine-tuning of the Stage II tiny model (see tiny_stage2.py).

    python -m heph_jax.train --config configs/tiny_ift.py --workdir runs/tiny_ift

Trains on the bundled IFT conversations with the loss on assistant turns only
(data.loss_on="completions": prompts, tool schemas and tool results carry weight 0), from Stage
II's final params with a fresh optimizer and a lower learning rate.
"""
import ml_collections

from heph_jax.config import sibling


def get_config():
  config = sibling(__file__, "tiny")
  config.init_from = "ckpt:runs/tiny_stage2"  # Stage II's workdir (its newest checkpoint)
  config.num_train_steps = 100
  config.eval_every_steps = 50
  config.checkpoint_every_steps = 50
  config.optimizer.learning_rate = 5e-4
  config.optimizer.warmup_steps = 10
  config.data.sources = ml_collections.ConfigDict(dict(ift="data/forge/ift.jsonl"))
  config.data.domains = ml_collections.ConfigDict(dict(ift=["ift"]))
  config.data.rates = ml_collections.ConfigDict(dict(ift=1.0))
  config.data.loss_on = "completions"
  return config
