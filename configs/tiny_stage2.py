"""CPU demo, Stage II: continue the Stage I tiny model on the agent seed data only.

    python -m heph_jax.train --config configs/tiny.py --workdir runs/tiny               # Stage I
    python -m heph_jax.train --config configs/tiny_stage2.py --workdir runs/tiny_stage2  # Stage II
    python -m heph_jax.train --config configs/tiny_ift.py --workdir runs/tiny_ift        # Stage III

Stage II of Hephaestus trains on the high-quality seed subset (tool documentation and agent
trajectories) after Stage I's broad mix. It starts from Stage I's final params (init_from; the
optimizer state starts fresh) with a lower peak learning rate and a short re-warmup.
"""
import ml_collections

from heph_jax.config import sibling


def get_config():
  config = sibling(__file__, "tiny")
  config.init_from = "ckpt:runs/tiny"  # Stage I's workdir (its newest checkpoint)
  config.num_train_steps = 100
  config.eval_every_steps = 50
  config.checkpoint_every_steps = 50
  config.optimizer.learning_rate = 1e-3  # Stage I (configs/tiny.py): 3e-3
  config.optimizer.warmup_steps = 10
  config.data.sources = ml_collections.ConfigDict(dict(
      tool_doc="data/forge/tool_doc.jsonl",
      trajectory="data/forge/trajectory.jsonl",
  ))
  config.data.domains = ml_collections.ConfigDict(dict(agent=["tool_doc", "trajectory"]))
  config.data.rates = ml_collections.ConfigDict(dict(tool_doc=0.5, trajectory=0.5))
  return config
