"""AdamW with global-norm clipping and a warmup + cosine / WSD / linear / constant schedule."""
import ml_collections
import optax
from heph_jax.errors import ConfigError


def learning_rate_schedule(opt: ml_collections.ConfigDict, num_train_steps: int) -> optax.Schedule:
  peak, warmup = opt.learning_rate, opt.warmup_steps
  floor = peak * opt.min_lr_ratio
  rest = max(num_train_steps - warmup, 1)
  warm = optax.linear_schedule(0.0, peak, warmup) if warmup else optax.constant_schedule(peak)
  if opt.schedule == "cosine":
    after = optax.cosine_decay_schedule(peak, rest, alpha=opt.min_lr_ratio)
  elif opt.schedule == "linear":
    after = optax.linear_schedule(peak, floor, rest)
  elif opt.schedule == "wsd":
    # Warmup-stable-decay: flat at peak, then a linear decay over the last decay_fraction of steps.
    decay = max(int(rest * opt.decay_fraction), 1)
    after = optax.join_schedules(
        [optax.constant_schedule(peak), optax.linear_schedule(peak, floor, decay)], [rest - decay])
  elif opt.schedule == "constant":
    after = optax.constant_schedule(peak)
  else:
    raise ConfigError(f"config.optimizer.schedule: unknown schedule {opt.schedule!r}")
  return optax.join_schedules([warm, after], [warmup])


def _decay_mask(params):
  # No weight decay on norm scales (1-D per layer); matrices and embeddings decay.
  import jax
  return jax.tree_util.tree_map_with_path(
      lambda path, _: not any(getattr(k, "key", None) == "scale" for k in path), params)


def make_optimizer(opt: ml_collections.ConfigDict, num_train_steps: int):
  schedule = learning_rate_schedule(opt, num_train_steps)
  tx = optax.chain(
      optax.clip_by_global_norm(opt.grad_clip_norm) if opt.grad_clip_norm > 0 else optax.identity(),
      optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay,
                  mask=_decay_mask),
  )
  return tx, schedule
