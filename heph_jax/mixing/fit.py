"""Fit one law to (x, y) points: variable projection with several restarts, and fit quality.

For fixed nonlinear parameters theta the best coefficients come from a (bounded) linear least
squares solve, so scipy's least_squares searches theta alone. Restarts from spread-out starting
points guard against the local minima that exponentials and power laws have.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import optimize

from heph_jax.mixing.laws import Law
from heph_jax.errors import HephError


class FitError(HephError, ValueError):
  """The data cannot support the requested fit; the message says why and what to do."""


@dataclasses.dataclass
class FitResult:
  law: Law
  dim: int
  theta: np.ndarray
  coef: np.ndarray
  rss: float
  num_points: int

  @property
  def num_params(self) -> int:
    return self.law.num_params(self.dim)

  def predict(self, x: np.ndarray) -> np.ndarray:
    return self.law.predict(_as_2d(x), self.theta, self.coef)

  def named_params(self, coord_names: list[str] | None = None) -> dict[str, float]:
    coord_names = coord_names or [f"x{j}" for j in range(self.dim)]
    names = self.law.param_names(self.dim, coord_names)
    values = list(self.coef) + list(self.theta)
    return {name: float(v) for name, v in zip(names, values)}


def _as_2d(x) -> np.ndarray:
  x = np.asarray(x, dtype=np.float64)
  return x[:, None] if x.ndim == 1 else x


def _solve_linear(basis, y, lo, hi):
  """Least-squares coefficients for one basis, with columns scaled for conditioning."""
  scale = np.linalg.norm(basis, axis=0)
  scale[~(scale > 0)] = 1.0
  scaled = basis / scale
  if np.all(np.isinf(lo)) and np.all(np.isinf(hi)):
    coef = np.linalg.lstsq(scaled, y, rcond=None)[0]
  else:
    coef = optimize.lsq_linear(scaled, y, bounds=(lo * scale, hi * scale), method="bvls").x
  return coef / scale


def check_points(x, y, law: Law, what: str = "data") -> tuple[np.ndarray, np.ndarray]:
  """Validates inputs and returns them as float arrays; raises FitError with the reason."""
  x, y = _as_2d(x), np.asarray(y, dtype=np.float64).reshape(-1)
  if x.shape[0] != y.shape[0]:
    raise FitError(f"{what}: {x.shape[0]} inputs but {y.shape[0]} losses")
  law.check_dim(x.shape[1])
  if not np.all(np.isfinite(x)):
    raise FitError(f"{what}: coordinates contain NaN or inf")
  bad = np.flatnonzero(~np.isfinite(y))
  if bad.size:
    raise FitError(f"{what}: loss is {y[bad[0]]} at point {int(bad[0])}; every loss must be finite")
  num_params = law.num_params(x.shape[1])
  distinct = np.unique(np.round(x, 9), axis=0).shape[0]
  if distinct < num_params:
    raise FitError(
        f"{what}: {distinct} distinct point(s) but law '{law.name}' has {num_params} parameters; "
        f"need at least {num_params} (and more to measure fit quality)")
  if np.ptp(y) <= 1e-12 * max(1.0, float(np.max(np.abs(y)))):
    raise FitError(
        f"{what}: all {y.size} losses equal {y[0]:.6g}; the loss does not depend on the mixture "
        "here, so there is nothing to fit (check that the runs really used different mixtures)")
  return x, y


def fit_law(law: Law, x, y, *, restarts: int = 8, seed: int = 0,
            theta0: np.ndarray | None = None, what: str = "data") -> FitResult:
  """Best least-squares fit of `law` over `restarts` starting points (plus theta0 if given)."""
  x, y = check_points(x, y, law, what)
  dim = x.shape[1]
  lin_lo, lin_hi = law.linear_bounds(dim)
  th_lo, th_hi = law.nonlinear_bounds(dim)
  penalty = np.full(y.shape, 1e6 * (1.0 + float(np.max(np.abs(y)))))

  def residual(theta):
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
      basis = law.basis(x, theta)
    if not np.all(np.isfinite(basis)):
      return penalty
    coef = _solve_linear(basis, y, lin_lo, lin_hi)
    r = basis @ coef - y
    return r if np.all(np.isfinite(r)) else penalty

  rng = np.random.default_rng(seed)
  starts = law.initial_nonlinear(dim, rng, max(1, restarts))
  if theta0 is not None:
    starts = np.concatenate([np.asarray(theta0, dtype=np.float64)[None, :], starts], axis=0)
  best_theta, best_rss = None, np.inf
  for start in starts:
    if start.size == 0:
      theta = start
    else:
      start = np.clip(start, th_lo, th_hi)
      theta = optimize.least_squares(residual, start, bounds=(th_lo, th_hi), method="trf").x
    rss = float(np.sum(residual(theta)**2))
    if rss < best_rss:
      best_theta, best_rss = theta, rss
  if best_theta is None or not np.isfinite(best_rss) or best_rss >= float(np.sum(penalty**2)):
    raise FitError(f"{what}: law '{law.name}' found no finite fit from {len(starts)} starts")
  coef = _solve_linear(law.basis(x, best_theta), y, lin_lo, lin_hi)
  return FitResult(law, dim, np.asarray(best_theta), coef, best_rss, y.size)


def leave_one_out(result: FitResult, x, y, *, restarts: int = 3, seed: int = 0) -> np.ndarray | None:
  """Held-out residuals (prediction - observed) refitting without each point; None if too few."""
  x, y = _as_2d(x), np.asarray(y, dtype=np.float64)
  residuals = np.empty(y.size)
  for i in range(y.size):
    keep = np.arange(y.size) != i
    try:
      held = fit_law(result.law, x[keep], y[keep], restarts=restarts, seed=seed + i,
                     theta0=result.theta)
    except FitError:
      return None  # e.g. dropping the point leaves fewer distinct points than parameters
    residuals[i] = held.predict(x[i:i + 1])[0] - y[i]
  return residuals


def fit_quality(result: FitResult, x, y, *, loo: bool = True) -> dict:
  """R^2, RMSE and leave-one-out errors of a fit on the points it was fitted to."""
  y = np.asarray(y, dtype=np.float64)
  pred = result.predict(x)
  rss = float(np.sum((pred - y)**2))
  tss = float(np.sum((y - y.mean())**2))
  quality = {
      "r2": 1.0 - rss / tss,
      "rmse": float(np.sqrt(rss / y.size)),
      "num_runs": int(y.size),
      "num_params": result.num_params,
      "dof": int(y.size - result.num_params),
      "loo_rmse": None,
      "loo_max_abs_error": None,
  }
  held = leave_one_out(result, x, y) if loo else None
  if held is not None:
    quality["loo_rmse"] = float(np.sqrt(np.mean(held**2)))
    quality["loo_max_abs_error"] = float(np.max(np.abs(held)))
  return quality
