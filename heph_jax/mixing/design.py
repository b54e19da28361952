"""Which coordinates a sweep's mixtures determine: the whole simplex, or one line through it.

A sweep that varies every proportion independently pins down a law over the whole simplex
(coordinates: all proportions but a reference one). A sweep that varies one domain's ratio and
keeps the others in fixed proportion (e.g. agent 0.1..0.7, code:text 1:1 - the paper's Figure 3
view) only pins down loss along that line; the law is then fitted against that one ratio and the
optimum is searched on that line.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from heph_jax.errors import HephError

_RANK_TOL = 1e-7
_SHARE_TOL = 1e-6


class DesignError(HephError, ValueError):
  """The runs' mixtures do not support the requested law or axis."""


@dataclasses.dataclass(frozen=True)
class Design:
  domains: tuple[str, ...]
  kind: str                                 # "simplex" or "line"
  axis: str | None = None                   # line: the domain whose ratio varies
  shares: dict[str, float] | None = None    # line: each other domain's share of the rest

  @property
  def coord_names(self) -> list[str]:
    return list(self.domains[:-1]) if self.kind == "simplex" else [self.axis]

  @property
  def dim(self) -> int:
    return len(self.coord_names)

  def coords(self, mixtures: np.ndarray) -> np.ndarray:
    """[n, dim] law inputs for [n, num_domains] mixtures."""
    mixtures = np.asarray(mixtures, dtype=np.float64)
    if self.kind == "simplex":
      return mixtures[:, :-1]
    return mixtures[:, [self.domains.index(self.axis)]]

  def line_mixtures(self, axis_values: np.ndarray, shares: dict[str, float] | None = None) -> np.ndarray:
    """Mixtures along a line: axis ratio x, the rest split by `shares` (default: the sweep's)."""
    shares = shares or self.shares
    x = np.asarray(axis_values, dtype=np.float64)
    out = np.zeros((x.size, len(self.domains)))
    for j, name in enumerate(self.domains):
      out[:, j] = x if name == self.axis else (1.0 - x) * shares[name]
    return out

  def equalities(self) -> tuple[np.ndarray, np.ndarray]:
    """Rows A, b (A r = b) that keep a mixture on this design's line; none for the simplex."""
    if self.kind == "simplex":
      return np.zeros((0, len(self.domains))), np.zeros(0)
    others = [d for d in self.domains if d != self.axis]
    rows = []
    first = others[0]
    for name in others[1:]:
      # r_name * share_first - r_first * share_name = 0 keeps their ratio fixed.
      row = np.zeros(len(self.domains))
      row[self.domains.index(name)] = self.shares[first]
      row[self.domains.index(first)] = -self.shares[name]
      rows.append(row)
    a = np.asarray(rows).reshape(-1, len(self.domains))
    return a, np.zeros(a.shape[0])

  def others_ratio(self) -> str:
    """E.g. 'code:text = 1:1' for a line design."""
    others = [d for d in self.domains if d != self.axis]
    smallest = min((self.shares[d] for d in others if self.shares[d] > 0), default=1.0)
    values = ":".join(f"{self.shares[d] / smallest:.3g}" for d in others)
    return f"{':'.join(others)} = {values}"

  def describe(self) -> str:
    if self.kind == "simplex":
      return (f"runs vary all of {list(self.domains)} independently; law over the simplex "
              f"(reference domain '{self.domains[-1]}')")
    return f"runs vary the '{self.axis}' ratio with {self.others_ratio()} fixed"


def _line_shares(mixtures, domains, axis):
  j = domains.index(axis)
  rest = 1.0 - mixtures[:, j]
  usable = rest > 1e-9  # a run of pure `axis` lies on every such line
  if not np.any(usable):
    return None
  others = [d for d in domains if d != axis]
  cols = [domains.index(d) for d in others]
  shares = mixtures[usable][:, cols] / rest[usable, None]
  if np.max(np.ptp(shares, axis=0)) > _SHARE_TOL:
    return None
  return {d: float(s) for d, s in zip(others, shares.mean(axis=0))}


def mixture_rank(mixtures: np.ndarray) -> int:
  centered = mixtures - mixtures.mean(axis=0, keepdims=True)
  singular = np.linalg.svd(centered, compute_uv=False)
  return int(np.sum(singular > _RANK_TOL))


def detect_design(mixtures: np.ndarray, domains: tuple[str, ...], *, axis: str = "agent",
                  law_dim: int | None = None) -> Design:
  """Picks the design the mixtures support; law_dim=1 asks for a line along `axis`."""
  mixtures = np.asarray(mixtures, dtype=np.float64)
  domains = tuple(domains)
  if len(domains) < 2:
    raise DesignError(f"need at least 2 mixture domains, got {list(domains)}")
  rank = mixture_rank(mixtures)
  if rank == 0:
    raise DesignError(
        f"all {mixtures.shape[0]} runs use the same mixture {dict(zip(domains, mixtures[0].round(6)))}; "
        "a mixing law needs runs at different mixtures")
  full = len(domains) - 1
  if rank == full and full > 1 and law_dim != 1:
    return Design(domains, "simplex")
  if axis not in domains and len(domains) == 2:
    axis = domains[0]  # with two domains either one's ratio says it all
  if axis not in domains:
    raise DesignError(f"axis '{axis}' is not a mixture domain; domains are {list(domains)}")
  if rank == 1:
    shares = _line_shares(mixtures, domains, axis)
    if shares is None:
      raise DesignError(
          f"the runs vary the mixture along one line, but not with the ratio among "
          f"{[d for d in domains if d != axis]} fixed, so loss cannot be read against the "
          f"'{axis}' ratio; pick another --axis")
    return Design(domains, "line", axis, shares)
  if law_dim == 1:
    raise DesignError(
        f"a 1-D law reads loss against the '{axis}' ratio, but these runs also vary the ratio "
        f"among {[d for d in domains if d != axis]} (mixtures span {rank} directions); use "
        "--law exponential, or keep the other domains' ratio fixed in the sweep")
  raise DesignError(
      f"the mixtures span {rank} of {full} directions of the simplex; vary every domain "
      "independently (law over the simplex) or only one domain's ratio (law along a line)")
