"""Nested use with a step scaling law (Ye et al. 2024, sec. 4).

Short proxy runs have not converged. Fit each run's eval curve with L(S) = E + B/S^beta,
predict its loss at the target step budget, and fit the mixing law on those predictions.
"""
from __future__ import annotations

import numpy as np

from heph_jax.mixing.fit import FitError, fit_law, fit_quality
from heph_jax.mixing.laws import StepLaw
from heph_jax.mixing.runs import RunsError, RunTable

_STEP_LAW = StepLaw()


def _curve(record: dict, domain: str, where: str) -> tuple[np.ndarray, np.ndarray]:
  points = {}
  for i, entry in enumerate(record.get("history") or []):
    if not isinstance(entry, dict) or "step" not in entry or "eval_loss" not in entry:
      raise RunsError(f"{where}: history[{i}] should be {{'step': int, 'eval_loss': {{...}}}}")
    if domain in entry["eval_loss"]:
      points[int(entry["step"])] = entry["eval_loss"][domain]
  if "steps" in record and record["steps"]:
    points[int(record["steps"])] = record["eval_loss"][domain]
  steps = np.array(sorted(s for s in points if s > 0), dtype=np.float64)
  losses = np.array([points[int(s)] for s in steps], dtype=np.float64)
  if not np.all(np.isfinite(losses)):
    raise RunsError(f"{where}: eval history of '{domain}' contains NaN/inf losses")
  return steps, losses


def extrapolate_to_steps(table: RunTable, target_steps: int, *, restarts: int = 4,
                         seed: int = 0) -> tuple[RunTable, dict]:
  """The table with every loss replaced by its step-law prediction at `target_steps`."""
  if target_steps <= 0:
    raise RunsError(f"--target_steps must be > 0, got {target_steps}")
  predicted = {d: np.empty(table.num_runs) for d in table.eval_domains}
  per_run = []
  for i, record in enumerate(table.records):
    where = f"{table.source}: run {i + 1} (mixture {record['mixture']})"
    if not record.get("history"):
      raise RunsError(f"{where}: no 'history' of eval losses, which --target_steps needs; "
                      "rerun the sweep (it records one) or drop --target_steps")
    entry = {"mixture": record["mixture"], "predicted": {}, "r2": {}}
    for domain in table.eval_domains:
      steps, losses = _curve(record, domain, where)
      try:
        fit = fit_law(_STEP_LAW, steps, losses, restarts=restarts, seed=seed,
                      what=f"{where}, '{domain}' eval curve")
      except FitError as e:
        raise RunsError(f"{e}; the step law E + B/S^beta needs eval losses at >= 3 distinct "
                        "steps (evaluate more often)") from None
      predicted[domain][i] = fit.predict(np.array([[float(target_steps)]]))[0]
      entry["predicted"][domain] = float(predicted[domain][i])
      entry["r2"][domain] = fit_quality(fit, steps, losses, loo=False)["r2"]
      entry.setdefault("max_observed_step", int(steps.max()))
    per_run.append(entry)
  report = {
      "law": _STEP_LAW.formula([]),
      "target_steps": int(target_steps),
      "min_r2": float(min(min(e["r2"].values()) for e in per_run)),
      "per_run": per_run,
  }
  return table.with_losses(predicted), report
