"""From a table of runs to a fitted law, its quality, the optimum and its interval, and a report."""
from __future__ import annotations

import dataclasses

import numpy as np

from heph_jax.data.pipeline import rates as rates_lib
from heph_jax.mixing.bootstrap import bootstrap_optimum
from heph_jax.mixing.design import Design, detect_design
from heph_jax.mixing.fit import FitResult, fit_law, fit_quality, leave_one_out
from heph_jax.mixing.laws import Law, get_law
from heph_jax.mixing.optimum import (Constraints, FeasibleSet, Objective, Optimum, find_optimum,
                                     in_hull)
from heph_jax.mixing.runs import RunTable


@dataclasses.dataclass
class Analysis:
  table: RunTable
  design: Design
  law: Law
  axis: str
  fits: dict[str, FitResult]
  quality: dict[str, dict]
  loo_residuals: dict[str, np.ndarray | None]
  objective: Objective
  feasible: FeasibleSet
  optimum: Optimum
  ci: dict | None
  extrapolated: bool
  notes: list[str]

  def predict(self, mixtures: np.ndarray) -> dict[str, np.ndarray]:
    x = self.design.coords(mixtures)
    return {d: f.predict(x) for d, f in self.fits.items()}

  def objective_values(self, mixtures: np.ndarray) -> np.ndarray:
    return _objective(self.fits, self.design, self.objective)(mixtures)

  def optimal_rates(self) -> dict[str, float]:
    r = np.clip(self.optimum.mixture, 0.0, None)
    return {d: float(v) for d, v in zip(self.design.domains, r / r.sum())}

  def report(self, domains: dict | None = None, within: dict | None = None) -> dict:
    """The rates.json content."""
    rates = self.optimal_rates()
    notes = list(self.notes)
    out = {"rates": rates}
    try:
      out["task_rates"] = rates_lib.domain_to_task_rates(rates, domains, within)
    except rates_lib.RatesError as e:
      notes.append(f"task_rates omitted: {e}")
    predicted = self.predict(self.optimum.mixture[None, :])
    out.update({
        "law": self.law.name,
        "formula": self.law.formula(self.design.coord_names),
        "design": self.design.describe(),
        "params": {d: f.named_params(self.design.coord_names) for d, f in self.fits.items()},
        "fit": self.quality,
        "objective": {"weights": self.objective.weights, "description": self.objective.describe(),
                      "value_at_optimum": self.optimum.value},
        "predicted_eval_loss": {d: float(v[0]) for d, v in predicted.items()},
        "optimum_ci": self.ci,
        "constraints": self.feasible.descriptions,
        "active_constraints": self.optimum.active,
        "extrapolated": self.extrapolated,
        "runs": {"source": self.table.source, "num_runs": self.table.num_runs},
        "notes": notes,
    })
    return out


def _objective(fits: dict[str, FitResult], design: Design, objective: Objective):
  def evaluate(mixtures: np.ndarray) -> np.ndarray:
    x = design.coords(np.atleast_2d(mixtures))
    return sum(w * fits[d].predict(x) for d, w in objective.weights.items() if w > 0)
  return evaluate


def analyze(table: RunTable, *, law: str = "exponential", objective: str = "mean",
            constraints: Constraints | None = None, axis: str = "agent", bootstrap: int = 200,
            level: float = 0.95, restarts: int = 8, seed: int = 0, loo: bool = True,
            within_runs: bool = False) -> Analysis:
  """Fits `law` per eval domain and finds the mixture minimizing `objective`.

  within_runs: search only inside each domain's range of proportions in the runs, so the
  optimum never rests on extrapolation.
  """
  law_obj = get_law(law)
  design = detect_design(table.mixtures, table.domains, axis=axis, law_dim=law_obj.required_dim)
  notes = [design.describe()]
  if within_runs:
    constraints = (constraints or Constraints()).within_box(
        table.domains, table.mixtures.min(axis=0), table.mixtures.max(axis=0))
  x = design.coords(table.mixtures)
  fits, quality, loo_residuals = {}, {}, {}
  for domain in table.eval_domains:
    y = table.losses[domain]
    fits[domain] = fit_law(law_obj, x, y, restarts=restarts, seed=seed,
                           what=f"{table.source}: eval domain '{domain}'")
    quality[domain] = fit_quality(fits[domain], x, y, loo=False)
    held = leave_one_out(fits[domain], x, y, seed=seed) if loo else None
    loo_residuals[domain] = held
    if held is not None:
      quality[domain]["loo_rmse"] = float(np.sqrt(np.mean(held**2)))
      quality[domain]["loo_max_abs_error"] = float(np.max(np.abs(held)))
    lo, hi = law_obj.nonlinear_bounds(design.dim)
    names = law_obj.param_names(design.dim, design.coord_names)[-len(lo):] if len(lo) else []
    for name, value, low, high in zip(names, fits[domain].theta, lo, hi):
      if min(value - low, high - value) < 0.01 * (high - low):
        notes.append(f"'{domain}': {name} = {value:.3g} is at (or near) its bound [{low:g}, {high:g}]: "
                     "the law does not describe this domain's losses well (check its R^2 and "
                     "leave-one-out error)")
    if quality[domain]["dof"] == 0:
      notes.append(f"'{domain}': as many parameters as runs, so the curve interpolates the runs "
                   "exactly and R^2 = 1 says nothing; add runs")
  objective_obj = Objective.parse(objective, table.eval_domains)
  feasible = FeasibleSet(table.domains, constraints, design, seed=seed)
  optimum = find_optimum(_objective(fits, design, objective_obj), feasible, seed=seed)
  extrapolated = not in_hull(design.coords(optimum.mixture[None, :])[0], x)
  if extrapolated:
    notes.append("the optimum lies outside the mixtures that were run: the law extrapolates there")
  ci = None
  if bootstrap > 0:
    ci = bootstrap_optimum(
        fits, x, table.losses, lambda refits: _objective(refits, design, objective_obj),
        feasible, optimum.mixture, num_samples=bootstrap, level=level, seed=seed)
  return Analysis(table, design, law_obj, axis, fits, quality, loo_residuals, objective_obj,
                  feasible, optimum, ci, extrapolated, notes)
