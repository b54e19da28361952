"""Loss laws: loss as a function of mixture coordinates (or of training steps).

Every law here is linear in a few coefficients once its nonlinear parameters are fixed:

    prediction = basis(x, theta) @ coef

so the fitter (fit.py) solves for `coef` by linear least squares and searches only `theta`
(variable projection). That keeps restarts cheap and the fits stable.

`x` is always a 2-D array [num_points, dim] of coordinates: the free mixture proportions for a
law over the simplex, the agent ratio for a 1-D law, the step count for the step law.
"""
from __future__ import annotations

import abc

import numpy as np

# Keeps x**-alpha finite at the edges of [0, 1].
_EDGE_EPS = 1e-6


class Law(abc.ABC):
  """Base class. Subclasses fill in the names, bounds and the basis."""

  name = ""
  summary = ""
  # None: any number of coordinates; an int: exactly that many.
  required_dim = None

  def check_dim(self, dim: int) -> None:
    if self.required_dim is not None and dim != self.required_dim:
      raise ValueError(
          f"law '{self.name}' takes {self.required_dim} coordinate(s), got {dim}")

  @abc.abstractmethod
  def linear_names(self, dim: int) -> list[str]:
    ...

  @abc.abstractmethod
  def nonlinear_names(self, dim: int) -> list[str]:
    ...

  def param_names(self, dim: int, coord_names: list[str]) -> list[str]:
    """Names for reports, in coef-then-theta order."""
    return self.linear_names(dim) + self.nonlinear_names(dim)

  def num_params(self, dim: int) -> int:
    return len(self.linear_names(dim)) + len(self.nonlinear_names(dim))

  def linear_bounds(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
    k = len(self.linear_names(dim))
    return np.full(k, -np.inf), np.full(k, np.inf)

  @abc.abstractmethod
  def nonlinear_bounds(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
    ...

  @abc.abstractmethod
  def initial_nonlinear(self, dim: int, rng: np.random.Generator, count: int) -> np.ndarray:
    """[count, num_nonlinear] starting points; the first is a fixed, sensible default."""

  @abc.abstractmethod
  def basis(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """[num_points, num_linear] design matrix for nonlinear parameters theta."""

  @abc.abstractmethod
  def formula(self, coord_names: list[str]) -> str:
    ...

  def predict(self, x: np.ndarray, theta: np.ndarray, coef: np.ndarray) -> np.ndarray:
    return self.basis(np.asarray(x, dtype=np.float64), np.asarray(theta)) @ np.asarray(coef)


def _uniform_starts(default, lo, hi, rng, count):
  default = np.asarray(default, dtype=np.float64)
  if count <= 1:
    return default[None, :]
  rest = rng.uniform(lo, hi, size=(count - 1, default.size))
  return np.concatenate([default[None, :], rest], axis=0)


class ExponentialLaw(Law):
  """Ye et al. 2024, "Data Mixing Laws": L_i(r) = c_i + k_i * exp(sum_j t_ij * r_j).

  On the simplex one proportion is fixed by the others (sum r = 1), so a term t_ref * r_ref can
  be folded into k and the other t's. We therefore drop the reference domain (its t is 0); the
  family of functions is the same and the parameters are identifiable. On a line through a
  vertex (e.g. agent ratio varied, code:text fixed) the law becomes c + k * exp(t * r_agent).
  """

  name = "exponential"
  summary = "Ye et al. 2024: c + k*exp(sum_j t_j*r_j)"
  _T_LIMIT = 30.0  # |t| beyond this means e^30 changes over the simplex: not a loss curve.

  def linear_names(self, dim):
    return ["c", "k"]

  def nonlinear_names(self, dim):
    return [f"t{j}" for j in range(dim)]

  def param_names(self, dim, coord_names):
    return ["c", "k"] + [f"t_{name}" for name in coord_names]

  def nonlinear_bounds(self, dim):
    return np.full(dim, -self._T_LIMIT), np.full(dim, self._T_LIMIT)

  def initial_nonlinear(self, dim, rng, count):
    return _uniform_starts(np.full(dim, -1.0), -8.0, 8.0, rng, count)

  def basis(self, x, theta):
    x = np.asarray(x, dtype=np.float64)
    return np.stack([np.ones(x.shape[0]), np.exp(x @ theta)], axis=1)

  def formula(self, coord_names):
    terms = " + ".join(f"t_{name}*r_{name}" for name in coord_names)
    return f"c + k*exp({terms})"


class TradeoffLaw(Law):
  """1-D law of loss against one domain's ratio x (the paper's Figure 3 view):

      L(x) = c + a * x**(-alpha) + b * (1 - x)**(-beta),   a, b >= 0.

  The a-term is the loss from too little of that domain's data, the b-term the loss from too
  little of everything else; with both present the curve has an interior minimum. Either may
  fit to 0, which gives a monotone curve (e.g. a domain's own eval loss).
  """

  name = "tradeoff"
  summary = "1-D: c + a*x^-alpha + b*(1-x)^-beta"
  required_dim = 1

  def linear_names(self, dim):
    return ["c", "a", "b"]

  def nonlinear_names(self, dim):
    return ["alpha", "beta"]

  def linear_bounds(self, dim):
    return np.array([-np.inf, 0.0, 0.0]), np.full(3, np.inf)

  def nonlinear_bounds(self, dim):
    return np.full(2, 0.01), np.full(2, 4.0)

  def initial_nonlinear(self, dim, rng, count):
    return _uniform_starts([0.5, 0.5], 0.05, 2.5, rng, count)

  def basis(self, x, theta):
    x = np.clip(np.asarray(x, dtype=np.float64)[:, 0], _EDGE_EPS, 1.0 - _EDGE_EPS)
    alpha, beta = theta
    return np.stack([np.ones_like(x), x**(-alpha), (1.0 - x)**(-beta)], axis=1)

  def formula(self, coord_names):
    x = f"r_{coord_names[0]}"
    return f"c + a*{x}^-alpha + b*(1-{x})^-beta"


class QuadraticLaw(Law):
  """1-D baseline: L(x) = c0 + c1*x + c2*x^2. Few parameters; no physics behind it."""

  name = "quadratic"
  summary = "1-D: c0 + c1*x + c2*x^2"
  required_dim = 1

  def linear_names(self, dim):
    return ["c0", "c1", "c2"]

  def nonlinear_names(self, dim):
    return []

  def nonlinear_bounds(self, dim):
    return np.zeros(0), np.zeros(0)

  def initial_nonlinear(self, dim, rng, count):
    return np.zeros((1, 0))

  def basis(self, x, theta):
    x = np.asarray(x, dtype=np.float64)[:, 0]
    return np.stack([np.ones_like(x), x, x * x], axis=1)

  def formula(self, coord_names):
    x = f"r_{coord_names[0]}"
    return f"c0 + c1*{x} + c2*{x}^2"


class StepLaw(Law):
  """Loss against training steps S: L(S) = E + B / S**beta, B >= 0.

  Used nested under a mixing law (Ye et al. sec. 4): fit each short run's eval curve, predict its
  loss at the target step budget, then fit the mixing law on those predictions.
  """

  name = "step"
  summary = "E + B/S^beta"
  required_dim = 1

  def linear_names(self, dim):
    return ["E", "B"]

  def nonlinear_names(self, dim):
    return ["beta"]

  def linear_bounds(self, dim):
    return np.array([-np.inf, 0.0]), np.full(2, np.inf)

  def nonlinear_bounds(self, dim):
    return np.array([0.01]), np.array([3.0])

  def initial_nonlinear(self, dim, rng, count):
    return _uniform_starts([0.5], 0.05, 2.0, rng, count)

  def basis(self, x, theta):
    steps = np.asarray(x, dtype=np.float64)[:, 0]
    return np.stack([np.ones_like(steps), steps**(-theta[0])], axis=1)

  def formula(self, coord_names):
    return "E + B/S^beta"


MIXING_LAWS = {law.name: law for law in (ExponentialLaw(), TradeoffLaw(), QuadraticLaw())}


def get_law(name: str) -> Law:
  if name not in MIXING_LAWS:
    raise ValueError(f"unknown mixing law '{name}'; expected one of {sorted(MIXING_LAWS)}")
  return MIXING_LAWS[name]
