"""Non-finite loss or gradient norm: the update is never applied; the run skips or stops.

The jitted train step itself drops a non-finite update (params and optimizer state stay as they
were: `keep_if_finite`), so no state that reaches a checkpoint is ever NaN. The host reads each
step's flag one step late (after the next step is dispatched, so the device never waits for the
host) and `NonFiniteGuard.check` either counts a skip (`config.skip_nonfinite_steps`) or raises
NonFiniteError naming the step, the loss, the grad norm and the batch's task mix; the loop then
exits without saving (status 4), so the newest checkpoint is the last good one.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from heph_jax.errors import HephError

EXIT_NONFINITE = 4


class NonFiniteError(HephError, FloatingPointError):
  """The loss or gradient norm was NaN or infinite more often than config.skip_nonfinite_steps."""
  exit_code = EXIT_NONFINITE


def keep_if_finite(finite, new_tree, old_tree):
  """new_tree where `finite` (a scalar bool), else old_tree, leaf by leaf (inside jit)."""
  import jax
  import jax.numpy as jnp
  return jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_tree, old_tree)


def task_mix(task_ids: np.ndarray, tasks: Sequence[str]) -> str:
  """'tool_doc 40%, code 60%' from per-token task ids (-1 = padding)."""
  counts = np.bincount(task_ids[task_ids >= 0].ravel(), minlength=len(tasks))
  total = max(int(counts.sum()), 1)
  return ", ".join(f"{t} {100 * n / total:.0f}%" for t, n in zip(tasks, counts) if n)


@dataclasses.dataclass
class NonFiniteGuard:
  allowed_skips: int
  say: Callable[[str], None]
  skipped: int = 0

  def check(self, step: int, metrics, mix: str) -> None:
    """Raises NonFiniteError, or counts a skip, when step's loss or grad norm is not finite."""
    import jax
    loss, grad_norm = (float(v) for v in jax.device_get((metrics["loss"], metrics["grad_norm"])))
    if np.isfinite(loss) and np.isfinite(grad_norm):
      return
    what = (f"step {step}: loss {loss}, grad norm {grad_norm}; the update was not applied "
            f"(batch task mix on this host: {mix or 'no tokens'})")
    self.skipped += 1
    if self.skipped > self.allowed_skips:
      raise NonFiniteError(f"{what}. Stopping after {self.skipped} non-finite step(s) "
                           f"(config.skip_nonfinite_steps={self.allowed_skips}); the newest "
                           "checkpoint holds the last good state. Lower the learning rate or "
                           "inspect this batch (python -m heph_jax.data.inspect).")
    self.say(f"skipped {what} [{self.skipped}/{self.allowed_skips} allowed]")
