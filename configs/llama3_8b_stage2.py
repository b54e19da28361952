"""Hephaestus Stage II: continual pre-training of the Stage I model on the high-quality seed data.

    python -m heph_jax.train --config configs/llama3_8b_stage2.py --workdir runs/llama3_8b_stage2

Starts from Stage I's final params (a fresh optimizer) and trains on the seed sources only: tool
documentation and agent trajectories (the paper's seed data, §4.1; code and general text are
dropped), as configs/tiny_stage2.py does at demo scale. Assumed, as the paper publishes none of
them: 4,000 steps (~8.4B tokens at Stage I's 2.1M-token batch), rates tool_doc 0.5 / trajectory
0.5, peak LR 1e-5 with 100 warmup steps, cosine to 10%. Model, mesh, batch and remat are Stage I's,
so the fit that heph_jax.aot reports for Stage I holds.
"""
import ml_collections

from heph_jax.config import sibling

# Stage I's --workdir: its newest checkpoint gives the params ("ckpt:DIR@STEP" pins a step).
STAGE1_WORKDIR = "runs/llama3_8b_stage1"


def get_config():
  config = sibling(__file__, "llama3_8b_stage1")
  config.init_from = "ckpt:" + STAGE1_WORKDIR
  config.num_train_steps = 4_000
  config.eval_every_steps = 250
  config.checkpoint_every_steps = 250
  config.optimizer.update(dict(learning_rate=1e-5, warmup_steps=100))
  data = config.data
  data.sources = ml_collections.ConfigDict({t: data.sources[t] for t in ("tool_doc", "trajectory")})
  data.domains = ml_collections.ConfigDict(dict(agent=["tool_doc", "trajectory"]))
  data.rates = ml_collections.ConfigDict(dict(tool_doc=0.5, trajectory=0.5))
  return config
