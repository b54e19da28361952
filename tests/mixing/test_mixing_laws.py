"""Mixing laws, fitting, optimum search and rates files, on synthetic runs from known laws.

References are independent of the code under test: the true laws written out in numpy, optima
found by brute-force grids over the simplex, np.polyfit for the linear (quadratic) law.
"""
import json

import numpy as np
import pytest

from heph_jax.data.pipeline import rates as rates_lib
from heph_jax.mixing.analyze import analyze
from heph_jax.mixing.design import DesignError
from heph_jax.mixing.fit import FitError, fit_law, fit_quality
from heph_jax.mixing.laws import ExponentialLaw, QuadraticLaw, StepLaw, TradeoffLaw
from heph_jax.mixing.optimum import Constraints, OptimumError
from heph_jax.mixing.runs import RunsError, table_from_records
from heph_jax.mixing.steps import extrapolate_to_steps

DOMAINS = ("agent", "code", "text")

# Ye et al. form per eval domain: c + k * exp(t . r) over (agent, code, text). Each domain's loss
# falls as its own share grows, so an equal-weight objective has an interior optimum.
YE_TRUE = {
    "agent": (1.8, 1.2, np.array([-2.0, 0.3, 0.5])),
    "code": (1.5, 1.0, np.array([0.2, -2.2, 0.4])),
    "text": (2.2, 0.9, np.array([0.3, 0.2, -1.8])),
}


def ye_loss(domain, mixtures):
  c, k, t = YE_TRUE[domain]
  return c + k * np.exp(np.asarray(mixtures) @ t)


def tradeoff_loss(x):
  """A Figure-3-like curve with its minimum near x = 0.34."""
  return 2.0 + 0.05 * x**-1.0 + 0.1 * (1.0 - x)**-1.5


def simplex_grid(step=0.002):
  g = np.arange(0.0, 1.0 + step / 2, step)
  a, c = np.meshgrid(g, g)
  keep = a + c <= 1.0 + 1e-12
  return np.stack([a[keep], c[keep], np.clip(1.0 - a[keep] - c[keep], 0, 1)], axis=1)


def line_mixtures(x):
  x = np.asarray(x, dtype=float)
  return np.stack([x, (1 - x) / 2, (1 - x) / 2], axis=1)


def records(mixtures, losses):
  return [{"mixture": dict(zip(DOMAINS, map(float, r))),
           "eval_loss": {d: float(v[i]) for d, v in losses.items()}}
          for i, r in enumerate(mixtures)]


def ye_records(mixtures, noise, seed):
  rng = np.random.default_rng(seed)
  losses = {d: ye_loss(d, mixtures) + rng.normal(0, noise, len(mixtures)) for d in DOMAINS}
  return records(mixtures, losses)


# ---------------------------------------------------------------- laws


def test_exponential_law_equals_ye_formula_with_reference_folded_in():
  rng = np.random.default_rng(0)
  mixtures = rng.dirichlet(np.ones(3), size=12)
  c, k, t = 1.3, 0.7, np.array([-1.5, 0.8, 0.6])
  ye = c + k * np.exp(mixtures @ t)
  # On the simplex t_text*r_text = t_text*(1 - r_agent - r_code): fold it into k and the t's.
  law = ExponentialLaw()
  theta = t[:2] - t[2]
  coef = np.array([c, k * np.exp(t[2])])
  np.testing.assert_allclose(law.predict(mixtures[:, :2], theta, coef), ye, rtol=1e-12)


def test_tradeoff_and_step_laws_match_their_formulas():
  x = np.linspace(0.05, 0.95, 9)[:, None]
  got = TradeoffLaw().predict(x, np.array([0.7, 1.3]), np.array([2.0, 0.1, 0.2]))
  np.testing.assert_allclose(got, 2.0 + 0.1 * x[:, 0]**-0.7 + 0.2 * (1 - x[:, 0])**-1.3)
  s = np.array([[10.0], [100.0], [1000.0]])
  got = StepLaw().predict(s, np.array([0.4]), np.array([1.5, 3.0]))
  np.testing.assert_allclose(got, 1.5 + 3.0 / s[:, 0]**0.4)


def test_fit_recovers_exponential_parameters_without_noise():
  rng = np.random.default_rng(1)
  mixtures = rng.dirichlet(np.ones(3), size=15)
  y = ye_loss("agent", mixtures)
  fit = fit_law(ExponentialLaw(), mixtures[:, :2], y, restarts=6)
  c, k, t = YE_TRUE["agent"]
  params = fit.named_params(["agent", "code"])
  assert params["c"] == pytest.approx(c, abs=1e-4)
  assert params["k"] == pytest.approx(k * np.exp(t[2]), rel=1e-4)
  assert params["t_agent"] == pytest.approx(t[0] - t[2], abs=1e-4)
  assert params["t_code"] == pytest.approx(t[1] - t[2], abs=1e-4)


def test_quadratic_fit_and_leave_one_out_match_polyfit():
  rng = np.random.default_rng(2)
  x = np.linspace(0.1, 0.7, 7)
  y = 2.0 + (x - 0.4)**2 + rng.normal(0, 0.01, x.size)
  fit = fit_law(QuadraticLaw(), x, y)
  quality = fit_quality(fit, x, y)
  ref = np.polyval(np.polyfit(x, y, 2), x)
  r2 = 1 - np.sum((ref - y)**2) / np.sum((y - y.mean())**2)
  held = [np.polyval(np.polyfit(np.delete(x, i), np.delete(y, i), 2), x[i]) - y[i]
          for i in range(x.size)]
  assert quality["r2"] == pytest.approx(r2, rel=1e-9)
  assert quality["loo_rmse"] == pytest.approx(np.sqrt(np.mean(np.square(held))), rel=1e-6)
  assert quality["loo_max_abs_error"] == pytest.approx(np.max(np.abs(held)), rel=1e-6)
  assert quality["dof"] == 4


# ---------------------------------------------------------------- optimum within 0.02


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simplex_optimum_within_0p02_of_true(seed):
  mixtures = np.random.default_rng(100 + seed).dirichlet(np.ones(3), size=20)
  table = table_from_records(ye_records(mixtures, noise=0.005, seed=seed))
  analysis = analyze(table, law="exponential", objective="mean", bootstrap=0, loo=False, seed=seed)
  grid = simplex_grid()
  true = grid[np.argmin(sum(ye_loss(d, grid) for d in DOMAINS))]
  assert analysis.design.kind == "simplex"
  assert np.max(np.abs(analysis.optimum.mixture - true)) < 0.02, (analysis.optimum.mixture, true)
  assert min(q["r2"] for q in analysis.quality.values()) > 0.99


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agent_ratio_tradeoff_optimum_within_0p02_of_true(seed):
  x = np.linspace(0.1, 0.7, 7)
  rng = np.random.default_rng(seed)
  losses = {"agent": tradeoff_loss(x) + rng.normal(0, 0.002, x.size)}
  table = table_from_records(records(line_mixtures(x), losses))
  analysis = analyze(table, law="tradeoff", objective="agent", bootstrap=0, loo=False, seed=seed)
  grid = np.linspace(0.001, 0.999, 99801)
  true = grid[np.argmin(tradeoff_loss(grid))]
  assert analysis.design.kind == "line"
  assert abs(analysis.optimum.mixture[0] - true) < 0.02
  # The other domains keep the sweep's 1:1 split.
  assert analysis.optimum.mixture[1] == pytest.approx(analysis.optimum.mixture[2], abs=1e-6)


def test_ye_law_along_agent_line_with_weighted_objective():
  x = np.linspace(0.1, 0.7, 7)
  rng = np.random.default_rng(5)
  mixtures = line_mixtures(x)
  losses = {d: ye_loss(d, mixtures) + rng.normal(0, 0.002, x.size) for d in DOMAINS}
  table = table_from_records(records(mixtures, losses))
  weights = {"agent": 0.5, "code": 0.25, "text": 0.25}
  analysis = analyze(table, objective="agent=0.5,code=0.25,text=0.25", bootstrap=0, loo=False)
  grid = np.linspace(0.0, 1.0, 100001)
  true = grid[np.argmin(sum(w * ye_loss(d, line_mixtures(grid)) for d, w in weights.items()))]
  assert analysis.design.kind == "line" and analysis.design.dim == 1
  assert abs(analysis.optimum.mixture[0] - true) < 0.02


def test_constrained_optimum_matches_brute_force():
  mixtures = np.random.default_rng(7).dirichlet(np.ones(3), size=20)
  table = table_from_records(ye_records(mixtures, noise=0.0, seed=0))
  constraints = Constraints.parse(minimum=["text=0.25"], maximum=["agent=0.4"],
                                  ratios=[])
  analysis = analyze(table, constraints=constraints, bootstrap=0, loo=False)
  grid = simplex_grid()
  grid = grid[(grid[:, 0] <= 0.4 + 1e-12) & (grid[:, 2] >= 0.25 - 1e-12)]
  true = grid[np.argmin(sum(ye_loss(d, grid) for d in DOMAINS))]
  assert np.max(np.abs(analysis.optimum.mixture - true)) < 0.005
  assert "agent at its maximum 0.4" in analysis.optimum.active

  fixed = analyze(table, constraints=Constraints.parse(ratios=["code:text=2:1"]), bootstrap=0,
                  loo=False)
  r = fixed.optimum.mixture
  assert r[1] == pytest.approx(2 * r[2], abs=1e-6)
  line = np.linspace(0, 1, 20001)
  on_line = np.stack([line, (1 - line) * 2 / 3, (1 - line) / 3], axis=1)
  true = on_line[np.argmin(sum(ye_loss(d, on_line) for d in DOMAINS))]
  assert np.max(np.abs(r - true)) < 0.005


def test_bootstrap_interval_contains_truth_and_grows_with_noise():
  x = np.linspace(0.1, 0.7, 7)
  grid = np.linspace(0.001, 0.999, 99801)
  true = grid[np.argmin(tradeoff_loss(grid))]
  widths = []
  for noise in (0.0005, 0.005):
    rng = np.random.default_rng(3)
    losses = {"agent": tradeoff_loss(x) + rng.normal(0, noise, x.size)}
    analysis = analyze(table_from_records(records(line_mixtures(x), losses)), law="tradeoff",
                       objective="agent", bootstrap=60, loo=False, seed=1)
    lo, hi = analysis.ci["rates"]["agent"]
    assert lo - 0.01 <= true <= hi + 0.01
    assert lo <= analysis.optimum.mixture[0] <= hi
    widths.append(hi - lo)
  assert widths[1] > 2 * widths[0] > 0


def test_no_interval_when_runs_equal_parameters():
  x = np.linspace(0.1, 0.7, 5)
  table = table_from_records(records(line_mixtures(x), {"agent": tradeoff_loss(x)}))
  analysis = analyze(table, law="tradeoff", objective="agent", bootstrap=20, loo=False)
  assert "skipped" in analysis.ci and "no residuals" in analysis.ci["skipped"]
  assert any("interpolates" in n for n in analysis.notes)


def test_extrapolated_optimum_is_flagged():
  x = np.linspace(0.5, 0.8, 6)   # the true optimum (0.34) lies below every run
  table = table_from_records(records(line_mixtures(x), {"agent": tradeoff_loss(x)}))
  analysis = analyze(table, law="tradeoff", objective="agent", bootstrap=0, loo=False)
  assert analysis.extrapolated
  bounded = analyze(table, law="tradeoff", objective="agent", bootstrap=0, loo=False,
                    within_runs=True)
  assert not bounded.extrapolated
  assert bounded.optimum.mixture[0] == pytest.approx(0.5, abs=1e-6)
  assert bounded.optimum.active == ["agent at its minimum 0.5", "code at its maximum 0.25",
                                    "text at its maximum 0.25"]
  inside = np.linspace(0.1, 0.7, 7)
  table = table_from_records(records(line_mixtures(inside), {"agent": tradeoff_loss(inside)}))
  assert not analyze(table, law="tradeoff", objective="agent", bootstrap=0, loo=False).extrapolated


# ---------------------------------------------------------------- nested step law


def test_step_law_extrapolation_finds_optimum_at_target_budget():
  # Loss at step S: L_inf(x) + B(x)/S^0.5, where the step term favours more agent data, so the
  # short-run optimum differs from the target-budget one; the step law must undo that.
  x = np.linspace(0.1, 0.7, 7)
  b = 4.0 * (1.2 - x)
  target = 100_000

  def loss(xv, bv, steps):
    return tradeoff_loss(xv) + bv / steps**0.5

  recs = []
  for xi, bi in zip(x, b):
    history = [{"step": s, "eval_loss": {"agent": float(loss(xi, bi, s))}} for s in (25, 50, 100)]
    recs.append({"mixture": dict(zip(DOMAINS, line_mixtures([xi])[0])),
                 "eval_loss": {"agent": float(loss(xi, bi, 200))}, "steps": 200,
                 "history": history})
  table = table_from_records(recs)
  short = analyze(table, law="tradeoff", objective="agent", bootstrap=0, loo=False)
  long_table, report = extrapolate_to_steps(table, target)
  np.testing.assert_allclose(long_table.losses["agent"], loss(x, b, target), atol=1e-4)
  assert report["min_r2"] > 0.9999
  nested = analyze(long_table, law="tradeoff", objective="agent", bootstrap=0, loo=False)
  grid = np.linspace(0.001, 0.999, 99801)
  b_grid = 4.0 * (1.2 - grid)
  true_long = grid[np.argmin(loss(grid, b_grid, target))]
  true_short = grid[np.argmin(loss(grid, b_grid, 200))]
  assert abs(true_long - true_short) > 0.05  # the budget matters in this example
  assert abs(nested.optimum.mixture[0] - true_long) < 0.02
  assert abs(short.optimum.mixture[0] - true_short) < 0.02


def test_step_law_needs_history():
  x = np.linspace(0.1, 0.7, 7)
  table = table_from_records(records(line_mixtures(x), {"agent": tradeoff_loss(x)}))
  with pytest.raises(RunsError, match="history"):
    extrapolate_to_steps(table, 1000)


# ---------------------------------------------------------------- degenerate inputs


def test_fewer_runs_than_parameters_is_an_error():
  mixtures = np.random.default_rng(0).dirichlet(np.ones(3), size=3)  # exponential: 4 params
  table = table_from_records(ye_records(mixtures, 0.0, 0))
  with pytest.raises(FitError, match=r"3 distinct point\(s\) but law 'exponential' has 4 parameters"):
    analyze(table, bootstrap=0)
  x = np.array([0.1, 0.3, 0.5, 0.7])  # tradeoff: 5 params
  table = table_from_records(records(line_mixtures(x), {"agent": tradeoff_loss(x)}))
  with pytest.raises(FitError, match="5 parameters"):
    analyze(table, law="tradeoff", bootstrap=0)


def test_all_equal_losses_is_an_error():
  x = np.linspace(0.1, 0.7, 7)
  table = table_from_records(records(line_mixtures(x), {"agent": np.full(7, 2.5)}))
  with pytest.raises(FitError, match="all 7 losses equal 2.5"):
    analyze(table, bootstrap=0)


def test_mixture_not_summing_to_one_is_an_error():
  recs = ye_records(line_mixtures(np.linspace(0.1, 0.7, 7)), 0.0, 0)
  recs[3]["mixture"] = {"agent": 0.4, "code": 0.3, "text": 0.2}
  with pytest.raises(RunsError, match=r"runs.jsonl:4: mixture proportions sum to 0.9"):
    table_from_records(recs, source="runs.jsonl")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None])
def test_nonfinite_loss_is_an_error(bad):
  recs = ye_records(line_mixtures(np.linspace(0.1, 0.7, 7)), 0.0, 0)
  recs[2]["eval_loss"]["code"] = bad
  with pytest.raises(RunsError, match=r"runs.jsonl:3: eval_loss\['code'\] is (nan|inf)"):
    table_from_records(recs, source="runs.jsonl")


def test_other_bad_runs_are_errors():
  recs = ye_records(line_mixtures(np.linspace(0.1, 0.7, 7)), 0.0, 0)
  negative = [dict(r) for r in recs]
  negative[0] = {**recs[0], "mixture": {"agent": -0.1, "code": 0.6, "text": 0.5}}
  with pytest.raises(RunsError, match=">= 0"):
    table_from_records(negative)
  other_domains = list(recs)
  other_domains[1] = {**recs[1], "mixture": {"agent": 0.5, "web": 0.5}}
  with pytest.raises(RunsError, match="differ from line 1"):
    table_from_records(other_domains)
  with pytest.raises(RunsError, match="missing key 'eval_loss'"):
    table_from_records([{"mixture": {"agent": 1.0}}])


def test_design_errors():
  same = line_mixtures(np.full(5, 0.3))
  with pytest.raises(DesignError, match="same mixture"):
    analyze(table_from_records(records(same, {"agent": np.arange(5.0)})), bootstrap=0)
  mixtures = np.random.default_rng(0).dirichlet(np.ones(3), size=10)
  with pytest.raises(DesignError, match="also vary the ratio"):
    analyze(table_from_records(ye_records(mixtures, 0.0, 0)), law="tradeoff", bootstrap=0)


def test_objective_and_constraint_errors():
  x = np.linspace(0.1, 0.7, 7)
  table = table_from_records(records(line_mixtures(x), {"agent": tradeoff_loss(x)}))
  with pytest.raises(OptimumError, match="'math', which has no eval loss"):
    analyze(table, law="tradeoff", objective="math", bootstrap=0)
  # The sweep fixed code:text at 1:1; asking for 2:1 leaves only pure agent data, which the bound
  # rules out.
  with pytest.raises(OptimumError, match=r"no mixture satisfies.*code:text = 2.*sweep's line"):
    analyze(table, law="tradeoff", bootstrap=0,
            constraints=Constraints.parse(maximum=["agent=0.9"], ratios=["code:text=2:1"]))
  with pytest.raises(OptimumError, match="no mixture satisfies"):
    analyze(table, law="tradeoff", bootstrap=0,
            constraints=Constraints.parse(minimum=["agent=0.6", "code=0.6"]))
  with pytest.raises(OptimumError, match="not a mixture domain"):
    analyze(table, law="tradeoff", constraints=Constraints.parse(minimum=["math=0.1"]), bootstrap=0)
  with pytest.raises(OptimumError, match="not a proportion"):
    Constraints.parse(maximum=["agent=1.5"])


# ---------------------------------------------------------------- rates


def test_domain_to_task_rates():
  got = rates_lib.domain_to_task_rates({"agent": 0.36, "code": 0.32, "text": 0.32})
  assert got == pytest.approx({"tool_doc": 0.18, "trajectory": 0.18, "code": 0.32, "text": 0.32})
  got = rates_lib.domain_to_task_rates({"agent": 0.4, "code": 0.3, "text": 0.3}, None,
                                       {"tool_doc": 1.0, "trajectory": 3.0})
  assert got["tool_doc"] == pytest.approx(0.1) and got["trajectory"] == pytest.approx(0.3)
  with pytest.raises(rates_lib.RatesError, match="lack"):
    rates_lib.domain_to_task_rates({"agent": 0.5, "code": 0.5})
  with pytest.raises(rates_lib.RatesError, match="cover"):
    rates_lib.domain_to_task_rates({"agent": 0.4, "code": 0.3, "text": 0.3}, None, {"tool_doc": 1})


def test_read_rates_file_errors(tmp_path):
  with pytest.raises(rates_lib.RatesError, match="no such rates file"):
    rates_lib.read_rates_file(str(tmp_path / "missing.json"))
  bad = tmp_path / "bad.json"
  bad.write_text('{"rates": {"agent": 0.5,}}')
  with pytest.raises(rates_lib.RatesError, match="not valid JSON"):
    rates_lib.read_rates_file(str(bad))
  for rates, match in [({"agent": 0.5, "code": 0.3, "text": 0.1}, "sum to 0.9"),
                       ({"agent": 1.2, "code": -0.2, "text": 0.0}, ">= 0"),
                       ({"agent": "a lot", "code": 0.5, "text": 0.5}, "expected a number")]:
    bad.write_text(json.dumps({"rates": rates}))
    with pytest.raises(rates_lib.RatesError, match=match):
      rates_lib.read_rates_file(str(bad))
  bad.write_text(json.dumps({"rates": {"agent": 0.4, "code": 0.3, "text": 0.3},
                             "task_rates": {"tool_doc": 0.1, "trajectory": 0.1, "code": 0.4,
                                            "text": 0.4}}))
  with pytest.raises(rates_lib.RatesError, match="sum to 0.2"):
    rates_lib.read_rates_file(str(bad))
  good = tmp_path / "good.json"
  good.write_text(json.dumps({"rates": {"agent": 0.4, "code": 0.3, "text": 0.3}}))
  assert rates_lib.read_task_rates(str(good)) == pytest.approx(
      {"tool_doc": 0.2, "trajectory": 0.2, "code": 0.3, "text": 0.3})
