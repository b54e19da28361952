"""Bootstrap confidence interval of the optimal mixture.

Residual bootstrap: with a handful of runs at fixed mixtures, resampling whole runs would often
leave fewer distinct mixtures than parameters. Instead each replicate keeps the mixtures, adds
resampled fit residuals to the fitted losses (the same run's residual for every eval domain, so
their correlation survives), refits every domain and searches the optimum again.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from heph_jax.mixing.fit import FitError, FitResult, fit_law
from heph_jax.mixing.optimum import FeasibleSet, OptimumError, find_optimum


def bootstrap_optimum(fits: dict[str, FitResult], x: np.ndarray, losses: dict[str, np.ndarray],
                      objective_for: Callable[[dict[str, FitResult]], Callable],
                      feasible: FeasibleSet, start: np.ndarray, *, num_samples: int = 200,
                      level: float = 0.95, seed: int = 0) -> dict:
  """Percentile interval of each domain's optimal proportion and of the objective there.

  objective_for(fits) must return the objective ([n, D] mixtures -> [n]) for a set of fits.
  """
  if not 0.0 < level < 1.0:
    raise ValueError(f"confidence level must be in (0, 1), got {level}")
  any_fit = next(iter(fits.values()))
  n, p = any_fit.num_points, any_fit.num_params
  report = {"method": "residual bootstrap", "level": level, "num_samples": int(num_samples)}
  if n <= p:
    report["skipped"] = (f"{n} runs for {p} parameters leaves no residuals to resample; "
                         "add runs to get an interval")
    return report
  # Fit residuals underestimate the noise by about p/n; inflate them back.
  inflate = np.sqrt(n / (n - p))
  fitted = {d: f.predict(x) for d, f in fits.items()}
  residuals = {d: (losses[d] - fitted[d]) for d in fits}
  residuals = {d: (r - r.mean()) * inflate for d, r in residuals.items()}

  rng = np.random.default_rng(seed)
  mixtures, values, failed = [], [], 0
  for b in range(num_samples):
    pick = rng.integers(0, n, size=n)
    try:
      refits = {d: fit_law(f.law, x, fitted[d] + residuals[d][pick], restarts=2, seed=seed + b,
                           theta0=f.theta) for d, f in fits.items()}
      best = find_optimum(objective_for(refits), feasible, num_candidates=512, num_polish=2,
                          seed=seed + b, extra_starts=start[None, :])
    except (FitError, OptimumError):
      failed += 1
      continue
    mixtures.append(best.mixture)
    values.append(best.value)
  report["num_failed"] = failed
  if len(mixtures) < max(10, num_samples // 2):
    report["skipped"] = f"only {len(mixtures)} of {num_samples} replicates gave a fit"
    return report
  mixtures = np.asarray(mixtures)
  tail = 100.0 * (1.0 - level) / 2.0
  lo, hi = np.percentile(mixtures, [tail, 100.0 - tail], axis=0)
  report["rates"] = {d: [float(a), float(b)] for d, a, b in zip(feasible.domains, lo, hi)}
  report["rates_std"] = {d: float(s) for d, s in zip(feasible.domains, mixtures.std(axis=0))}
  report["objective"] = [float(v) for v in np.percentile(values, [tail, 100.0 - tail])]
  return report
