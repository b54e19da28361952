"""Mixing-law sweep on the CPU demo: tiny model, agent ratio 0.1..0.7, code:text fixed at 1:1.

  python -m heph_jax.mixing sweep --config configs/mixing_sweep.py --workdir /tmp/sweep [--steps N]
  python -m heph_jax.mixing fit --runs /tmp/sweep/runs.jsonl --output rates.json --plot fit.png

Every run starts from the same seed and config; only data.rates differs. Fields:
  base_config  training config to start from (path, or a name next to this file)
  overrides    nested values set on the base config (keys must exist there)
  steps        training steps per run (--steps overrides); eval every steps // num_evals, so
               each run also records an eval curve for the step law (fit --target-steps)
  mixtures     domain proportions per run (sum 1); domains -> tasks as in data.domains
  within       None: a domain's rate is split equally over its tasks; or {task: weight}
"""
import ml_collections

AGENT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
CODE_TO_TEXT = (1.0, 1.0)  # the remainder splits code:text like this in every run


def mixtures(agent_ratios=AGENT_RATIOS, code_to_text=CODE_TO_TEXT):
  code_share = code_to_text[0] / (code_to_text[0] + code_to_text[1])
  return [{"agent": a, "code": (1.0 - a) * code_share, "text": (1.0 - a) * (1.0 - code_share)}
          for a in agent_ratios]


def get_config():
  config = ml_collections.ConfigDict()
  config.base_config = "tiny.py"
  config.overrides = ml_collections.ConfigDict(dict(
      log_every_steps=20,
      eval_batches=2,
      async_checkpointing=False,
      optimizer=dict(warmup_steps=10),
  ))
  config.steps = 50
  config.num_evals = 5
  config.mixtures = mixtures()
  config.domains = None   # None: the base config's data.domains
  config.within = None
  return config
