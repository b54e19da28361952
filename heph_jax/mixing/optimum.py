"""The best mixture under constraints: objective, feasible set, and the search.

Mixtures live on the simplex (proportions >= 0, sum 1). Constraints add per-domain bounds and
fixed ratios between domains (e.g. code:text = 1:1); a line design (design.py) adds the
sweep's own fixed ratios. All of these are linear, so the feasible set is a convex polytope:
we find its vertices with linear programs, score many points inside it, and polish the best
few with SLSQP.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from scipy import optimize

from heph_jax.mixing.design import Design
from heph_jax.errors import HephError

_FEAS_TOL = 1e-7


class OptimumError(HephError, ValueError):
  """Bad objective/constraints, or no feasible mixture; the message says which."""


def _parse_pairs(specs, what: str) -> dict[str, str]:
  out = {}
  for spec in specs or ():
    for item in str(spec).split(","):
      if not item.strip():
        continue
      if "=" not in item:
        raise OptimumError(f"{what}: '{item}' should look like name=value")
      name, value = item.split("=", 1)
      out[name.strip()] = value.strip()
  return out


def _fraction(text: str, what: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise OptimumError(f"{what}: '{text}' is not a number") from None
  if not 0.0 <= value <= 1.0:
    raise OptimumError(f"{what}: {value} is not a proportion in [0, 1]")
  return value


@dataclasses.dataclass
class Constraints:
  minimum: dict[str, float] = dataclasses.field(default_factory=dict)
  maximum: dict[str, float] = dataclasses.field(default_factory=dict)
  ratios: list[tuple[str, str, float]] = dataclasses.field(default_factory=list)  # r_a = v*r_b

  @classmethod
  def parse(cls, minimum=(), maximum=(), ratios=()) -> "Constraints":
    """From CLI strings: minimum ["agent=0.1"], maximum ["agent=0.8"], ratios ["code:text=1:1"]."""
    lows = {k: _fraction(v, f"--min {k}") for k, v in _parse_pairs(minimum, "--min").items()}
    highs = {k: _fraction(v, f"--max {k}") for k, v in _parse_pairs(maximum, "--max").items()}
    parsed = []
    for name, value in _parse_pairs(ratios, "--ratio").items():
      if ":" not in name:
        raise OptimumError(f"--ratio: '{name}={value}' should look like code:text=1:1 or code:text=1.5")
      a, b = (part.strip() for part in name.split(":", 1))
      try:
        if ":" in value:
          num, den = (float(p) for p in value.split(":", 1))
        else:
          num, den = float(value), 1.0
      except ValueError:
        raise OptimumError(f"--ratio {name}: '{value}' is not a ratio like 1:1 or 1.5") from None
      if not (num > 0 and den > 0 and np.isfinite(num / den)):
        raise OptimumError(f"--ratio {name}: both sides of '{value}' must be positive numbers")
      parsed.append((a, b, num / den))
    return cls(lows, highs, parsed)

  def check(self, domains) -> None:
    for name in list(self.minimum) + list(self.maximum) + [n for r in self.ratios for n in r[:2]]:
      if name not in domains:
        raise OptimumError(f"constraint names '{name}', not a mixture domain; domains are {list(domains)}")
    for name, low in self.minimum.items():
      if low > self.maximum.get(name, 1.0):
        raise OptimumError(f"constraint on '{name}': minimum {low} > maximum {self.maximum.get(name, 1.0)}")

  def within_box(self, domains, lower, upper) -> "Constraints":
    """These constraints, tightened to lower <= r <= upper (e.g. the range the runs covered)."""
    minimum, maximum = dict(self.minimum), dict(self.maximum)
    for name, low, high in zip(domains, lower, upper):
      minimum[name] = max(minimum.get(name, 0.0), float(low))
      maximum[name] = min(maximum.get(name, 1.0), float(high))
    return Constraints(minimum, maximum, list(self.ratios))

  def describe(self) -> list[str]:
    out = [f"{k} >= {v:g}" for k, v in self.minimum.items()]
    out += [f"{k} <= {v:g}" for k, v in self.maximum.items()]
    out += [f"{a}:{b} = {v:g}" for a, b, v in self.ratios]
    return out


@dataclasses.dataclass
class Objective:
  weights: dict[str, float]  # eval domain -> weight; objective = sum_d w_d * L_d

  @classmethod
  def parse(cls, spec: str, eval_domains) -> "Objective":
    """'mean' (every eval domain, equal weights), 'agent', or 'agent=0.5,code=0.25,text=0.25'."""
    eval_domains = list(eval_domains)
    spec = (spec or "mean").strip()
    if spec == "mean":
      weights = {d: 1.0 / len(eval_domains) for d in eval_domains}
    elif "=" not in spec:
      weights = {spec: 1.0}
    else:
      weights = {}
      for name, value in _parse_pairs([spec], "--objective").items():
        try:
          weights[name] = float(value)
        except ValueError:
          raise OptimumError(f"--objective: weight '{value}' for '{name}' is not a number") from None
    for name, weight in weights.items():
      if name not in eval_domains:
        raise OptimumError(f"--objective names '{name}', which has no eval loss; eval domains are "
                           f"{eval_domains}")
      if not (np.isfinite(weight) and weight >= 0):
        raise OptimumError(f"--objective: weight for '{name}' must be finite and >= 0, got {weight}")
    if not any(w > 0 for w in weights.values()):
      raise OptimumError("--objective: at least one weight must be > 0")
    return cls(weights)

  def describe(self) -> str:
    if len(self.weights) == 1:
      return f"{next(iter(self.weights))} eval loss"
    if len(set(self.weights.values())) == 1:
      return f"mean of {', '.join(self.weights)} eval losses"
    return " + ".join(f"{w:g}*L_{d}" for d, w in self.weights.items())


class FeasibleSet:
  """{r : sum r = 1, lo <= r <= hi, ratio and design equalities}, with its vertices."""

  def __init__(self, domains, constraints: Constraints | None = None, design: Design | None = None,
               seed: int = 0):
    self.domains = tuple(domains)
    constraints = constraints or Constraints()
    constraints.check(self.domains)
    n = len(self.domains)
    self.lower = np.array([constraints.minimum.get(d, 0.0) for d in self.domains])
    self.upper = np.array([constraints.maximum.get(d, 1.0) for d in self.domains])
    rows, rhs = [np.ones(n)], [1.0]
    for a, b, value in constraints.ratios:
      row = np.zeros(n)
      row[self.domains.index(a)] += 1.0
      row[self.domains.index(b)] -= value
      rows.append(row)
      rhs.append(0.0)
    self.descriptions = ["proportions sum to 1"] + constraints.describe()
    if design is not None and design.kind == "line":
      a_line, b_line = design.equalities()
      rows.extend(a_line)
      rhs.extend(b_line)
      self.descriptions.append(f"on the sweep's line ({design.describe()})")
    self.a_eq = np.asarray(rows)
    self.b_eq = np.asarray(rhs)
    self.vertices = self._find_vertices(np.random.default_rng(seed))

  def _lp(self, cost):
    return optimize.linprog(cost, A_eq=self.a_eq, b_eq=self.b_eq,
                            bounds=list(zip(self.lower, self.upper)), method="highs-ds")

  def _find_vertices(self, rng) -> np.ndarray:
    n = len(self.domains)
    first = self._lp(np.zeros(n))
    if first.status != 0:
      raise OptimumError("no mixture satisfies all constraints: " + "; ".join(self.descriptions))
    directions = np.concatenate([np.eye(n), -np.eye(n), rng.normal(size=(4 * n + 8, n))])
    found = [first.x]
    for cost in directions:
      result = self._lp(cost)
      if result.status == 0:
        found.append(result.x)
    return np.unique(np.round(np.asarray(found), 10), axis=0)

  def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
    """Random points of the polytope: convex combinations of its vertices."""
    if self.vertices.shape[0] == 1:
      return np.repeat(self.vertices, count, axis=0)
    weights = rng.dirichlet(np.ones(self.vertices.shape[0]), size=count)
    return weights @ self.vertices

  def violation(self, r: np.ndarray) -> float:
    eq = np.max(np.abs(self.a_eq @ r - self.b_eq))
    bounds = max(np.max(self.lower - r), np.max(r - self.upper), 0.0)
    return float(max(eq, bounds))

  def active(self, r: np.ndarray, tol: float = 1e-5) -> list[str]:
    out = []
    for d, value, low, high in zip(self.domains, r, self.lower, self.upper):
      if value <= low + tol:
        out.append(f"{d} at its minimum {low:g}")
      elif value >= high - tol:
        out.append(f"{d} at its maximum {high:g}")
    return out


@dataclasses.dataclass
class Optimum:
  mixture: np.ndarray   # [num_domains]
  value: float          # objective at the optimum
  active: list[str]     # bounds the optimum sits on


def find_optimum(objective: Callable[[np.ndarray], np.ndarray], feasible: FeasibleSet, *,
                 num_candidates: int = 4096, num_polish: int = 4, seed: int = 0,
                 extra_starts: np.ndarray | None = None) -> Optimum:
  """Minimizes objective([n, D] mixtures) -> [n] over the feasible set."""
  rng = np.random.default_rng(seed)
  parts = [feasible.vertices, feasible.sample(rng, num_candidates)]
  if extra_starts is not None:
    parts.append(np.asarray(extra_starts, dtype=np.float64).reshape(-1, len(feasible.domains)))
  candidates = np.concatenate(parts)

  def scored(points):
    with np.errstate(all="ignore"):
      values = np.asarray(objective(points), dtype=np.float64)
    return np.where(np.isfinite(values), values, np.inf)

  values = scored(candidates)
  order = np.argsort(values)
  if not np.isfinite(values[order[0]]):
    raise OptimumError("the fitted objective is not finite anywhere in the feasible set")
  best, best_value = candidates[order[0]], float(values[order[0]])

  starts = []
  for i in order:
    if len(starts) == num_polish or not np.isfinite(values[i]):
      break
    if all(np.max(np.abs(candidates[i] - s)) > 1e-3 for s in starts):
      starts.append(candidates[i])
  constraint = {"type": "eq", "fun": lambda r: feasible.a_eq @ r - feasible.b_eq,
                "jac": lambda r: feasible.a_eq}
  bounds = list(zip(feasible.lower, feasible.upper))
  for start in starts:
    with np.errstate(all="ignore"):
      result = optimize.minimize(lambda r: float(scored(r[None, :])[0]), start, method="SLSQP",
                                 bounds=bounds, constraints=[constraint],
                                 options={"ftol": 1e-12, "maxiter": 300})
    r = np.clip(result.x, feasible.lower, feasible.upper)
    if feasible.violation(r) > _FEAS_TOL:
      continue
    value = float(scored(r[None, :])[0])
    if value < best_value:
      best, best_value = r, value
  best = np.clip(best, feasible.lower, feasible.upper)  # LP vertices can be off by -1e-17
  return Optimum(best, best_value, feasible.active(best))


def in_hull(point: np.ndarray, points: np.ndarray) -> bool:
  """Whether `point` is a convex combination of the rows of `points` (an LP feasibility check)."""
  points = np.asarray(points, dtype=np.float64)
  n = points.shape[0]
  a_eq = np.concatenate([points.T, np.ones((1, n))])
  b_eq = np.concatenate([np.asarray(point, dtype=np.float64), [1.0]])
  result = optimize.linprog(np.zeros(n), A_eq=a_eq, b_eq=b_eq, bounds=[(0, None)] * n,
                            method="highs")
  return result.status == 0
