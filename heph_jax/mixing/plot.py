"""Figure of a mixing-law fit: loss against one domain's ratio, and fitted vs observed losses."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display on training hosts
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from heph_jax.mixing.analyze import Analysis  # noqa: E402
from heph_jax.mixing.design import Design  # noqa: E402


def _line_through_optimum(analysis: Analysis) -> tuple[str, dict[str, float], str]:
  """The axis, the other domains' shares along the plotted line, and a caption for it."""
  design, axis = analysis.design, analysis.axis
  if design.kind == "line":
    return design.axis, design.shares, f"{design.others_ratio()} as in the sweep"
  if axis not in design.domains:
    axis = design.domains[0]
  r = analysis.optimum.mixture
  j = design.domains.index(axis)
  rest = max(1.0 - r[j], 1e-12)
  shares = {d: float(r[i] / rest) for i, d in enumerate(design.domains) if d != axis}
  ratio = Design(design.domains, "line", axis, shares).others_ratio()
  return axis, shares, f"{ratio} as at the optimum; other runs off this line"


def plot_analysis(analysis: Analysis, path: str, title: str | None = None) -> None:
  design = analysis.design
  axis, shares, caption = _line_through_optimum(analysis)
  line_design = Design(design.domains, "line", axis, shares)
  j = design.domains.index(axis)
  observed_x = analysis.table.mixtures[:, j]
  lo = max(0.0, min(observed_x.min(), analysis.optimum.mixture[j]) - 0.05)
  hi = min(1.0, max(observed_x.max(), analysis.optimum.mixture[j]) + 0.05)
  grid = np.linspace(max(lo, 0.005), min(hi, 0.995), 300)
  grid_mixtures = line_design.line_mixtures(grid, shares)
  predicted = analysis.predict(grid_mixtures)

  fig, (ax, parity) = plt.subplots(1, 2, figsize=(12, 6.2), gridspec_kw={"width_ratios": [3, 2]})
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for i, domain in enumerate(analysis.table.eval_domains):
    color = colors[i % len(colors)]
    r2 = analysis.quality[domain]["r2"]
    ax.scatter(observed_x, analysis.table.losses[domain], color=color, zorder=3,
               label=f"{domain} eval loss (observed)")
    ax.plot(grid, predicted[domain], color=color, lw=1.5, label=f"{domain} fit (R²={r2:.3f})")
  weights = analysis.objective.weights
  if len(weights) > 1:
    ax.plot(grid, analysis.objective_values(grid_mixtures), color="black", lw=2.5,
            label=f"objective: {analysis.objective.describe()}")
  # Shade what the optimum search could not reach (bounds, --within_runs).
  reach = analysis.feasible.vertices[:, j]
  label = "outside the search range"
  for left, right in ((grid[0], reach.min()), (reach.max(), grid[-1])):
    if right - left > 1e-6:
      ax.axvspan(left, right, color="red", alpha=0.06, lw=0, label=label)
      label = None
  best_x = analysis.optimum.mixture[j]
  ax.axvline(best_x, color="black", ls="--", lw=1)
  ax.plot([best_x], [analysis.optimum.value], marker="*", ms=18, color="gold",
          markeredgecolor="black", zorder=5, label=f"optimum: {axis} = {best_x:.3f}")
  ci = (analysis.ci or {}).get("rates", {}).get(axis)
  if ci:
    ax.axvspan(ci[0], ci[1], color="gray", alpha=0.25,
               label=f"{int(100 * analysis.ci['level'])}% bootstrap CI [{ci[0]:.3f}, {ci[1]:.3f}]")
  ax.set_xlabel(f"{axis} proportion of the training mix ({caption})")
  ax.set_ylabel("eval loss")
  ax.set_title(title or f"mixing law '{analysis.law.name}': {analysis.law.formula(design.coord_names)}",
               fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)

  lows, highs = [], []
  for i, domain in enumerate(analysis.table.eval_domains):
    color = colors[i % len(colors)]
    observed = analysis.table.losses[domain]
    fitted = analysis.fits[domain].predict(design.coords(analysis.table.mixtures))
    parity.scatter(observed, fitted, color=color, s=18, label=f"{domain} fit")
    lows.append(min(observed.min(), fitted.min()))
    highs.append(max(observed.max(), fitted.max()))
    held = analysis.loo_residuals.get(domain)
    if held is not None:
      parity.scatter(observed, observed + held, s=60, facecolors="none", edgecolors=color,
                     label=f"{domain} leave-one-out (RMSE {np.sqrt(np.mean(held**2)):.3g})")
      lows.append((observed + held).min())
      highs.append((observed + held).max())
  span = [min(lows), max(highs)]
  parity.plot(span, span, color="gray", lw=1)
  parity.set_xlabel("observed eval loss")
  parity.set_ylabel("predicted eval loss")
  parity.set_title("fit (filled) and leave-one-out (hollow) predictions", fontsize=10)
  parity.grid(alpha=0.3)
  parity.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2,
                frameon=False)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)

