"""python -m heph_jax.mixing {sweep,fit} ...

  sweep: train one small model per mixture of a sweep config; records DIR/runs.jsonl.
  fit:   fit a mixing law to runs.jsonl; writes the optimal rates (rates.json) and a plot.
"""
from __future__ import annotations

import sys

from absl import flags

from heph_jax import cli
from heph_jax.errors import HephError
from heph_jax.mixing.laws import MIXING_LAWS


COMMANDS = ("sweep", "fit")
_REQUIRED = {"sweep": ("config", "workdir"), "fit": ("runs", "output")}


def define_flags(values, argv):
  del argv
  def string(name, default, text):
    flags.DEFINE_string(name, default, text, flag_values=values)
  # sweep
  string("config", None, "sweep: the sweep config file (e.g. configs/mixing_sweep.py); fit: a sweep "
         "or training config whose data.domains / domains and within map domains to tasks for "
         "task_rates (default: agent=tool_doc+trajectory)")
  string("workdir", None, "sweep: the sweep directory; runs.jsonl goes here")
  flags.DEFINE_integer("steps", None, "sweep: training steps per run (overrides the config)",
                       flag_values=values)
  flags.DEFINE_bool("dry_run", False, "sweep: print the planned runs and exit", flag_values=values)
  # fit
  string("runs", None, "fit: runs.jsonl written by `sweep`")
  string("output", None, "fit: rates file to write (JSON)")
  flags.DEFINE_enum("law", "exponential", sorted(MIXING_LAWS),
                    "fit: exponential: Ye et al. 2024 (default); tradeoff/quadratic: 1-D in --axis",
                    flag_values=values)
  string("objective", "mean", "fit: 'mean' of all eval losses (default), one domain ('agent'), or "
         "weights ('agent=0.5,code=0.25,text=0.25')")
  string("axis", "agent", "fit: the domain whose ratio a 1-D view reads (default agent)")
  for name, text in (("min", "DOMAIN=P: lower bound"), ("max", "DOMAIN=P: upper bound"),
                     ("ratio", "A:B=X:Y: fixed ratio of two domains, e.g. code:text=1:1")):
    flags.DEFINE_multi_string(name, [], f"fit: {text}; repeatable", flag_values=values)
  flags.DEFINE_bool("within_runs", False, "fit: search only within each domain's range of "
                    "proportions in the runs (no extrapolation)", flag_values=values)
  flags.DEFINE_integer("target_steps", None, "fit: extrapolate each run to this many steps with "
                       "L(S)=E+B/S^beta first", flag_values=values)
  flags.DEFINE_integer("bootstrap", 200, "fit: bootstrap replicates for the CI (0: none)",
                       flag_values=values)
  flags.DEFINE_float("level", 0.95, "fit: confidence level of the CI", flag_values=values)
  flags.DEFINE_integer("restarts", 8, "fit: optimizer restarts per fit", flag_values=values)
  flags.DEFINE_integer("seed", 0, "fit: random seed", flag_values=values)
  string("plot", None, "fit: PNG to write: observed points, fitted curves, optimum")


def _command(args, positional) -> int:
  if len(positional) != 1 or positional[0] not in COMMANDS:
    raise HephError(f"expected one command, sweep or fit; got {positional or 'none'}")
  command = positional[0]
  missing = [f"--{name}" for name in _REQUIRED[command] if getattr(args, name) is None]
  if missing:
    raise HephError(f"{command} needs {' and '.join(missing)}")
  return _sweep(args) if command == "sweep" else _fit(args)


def _domains_from_config(path):
  from heph_jax.config import load_config_file
  config = load_config_file(path)
  domains = config.get("domains") or (config.data.get("domains") if "data" in config else None)
  return domains, config.get("within")


def _sweep(args) -> int:
  from heph_jax.config import load_config_file
  from heph_jax.mixing import sweep as sweep_lib
  sweep = load_config_file(args.config)
  if args.dry_run:
    base, domains, mixtures = sweep_lib.plan_sweep(sweep, args.config, steps=args.steps)
    print(f"{len(mixtures)} runs of {base.num_train_steps} steps (eval every "
          f"{base.eval_every_steps}); domains {domains}")
    for mixture, task_rates in mixtures:
      print(f"  {sweep_lib.mixture_tag(mixture, base.num_train_steps)}: task rates "
            + ", ".join(f"{t}={r:.4f}" for t, r in task_rates.items()))
    return 0
  records = sweep_lib.run_sweep(sweep, args.workdir, sweep_path=args.config, steps=args.steps)
  print(f"{len(records)} runs in {args.workdir}/runs.jsonl; next: python -m heph_jax.mixing fit "
        f"--runs {args.workdir}/runs.jsonl --output rates.json --plot fit.png")
  return 0


def _fit(args) -> int:
  from heph_jax.data.pipeline import rates as rates_lib
  from heph_jax.mixing.analyze import analyze
  from heph_jax.mixing.optimum import Constraints
  from heph_jax.mixing.runs import read_runs
  from heph_jax.mixing.steps import extrapolate_to_steps

  table = read_runs(args.runs)
  step_report = None
  if args.target_steps is not None:
    table, step_report = extrapolate_to_steps(table, args.target_steps, seed=args.seed)
  constraints = Constraints.parse(args.min, args.max, args.ratio)
  analysis = analyze(table, law=args.law, objective=args.objective, constraints=constraints,
                     axis=args.axis, bootstrap=args.bootstrap, level=args.level,
                     restarts=args.restarts, seed=args.seed, within_runs=args.within_runs)
  domains, within = _domains_from_config(args.config) if args.config else (None, None)
  report = analysis.report(domains, within)
  if step_report is not None:
    report["step_law"] = step_report
  rates_lib.write_json(args.output, report)
  if args.plot:
    from heph_jax.mixing.plot import plot_analysis
    plot_analysis(analysis, args.plot)
  _print_summary(report, args)
  return 0


def _print_summary(report, args):
  rates = ", ".join(f"{d} {v:.3f}" for d, v in report["rates"].items())
  print(f"law {report['law']}: {report['formula']}  ({report['design']})")
  for domain, q in report["fit"].items():
    loo = "n/a" if q["loo_rmse"] is None else f"{q['loo_rmse']:.4g}"
    print(f"  {domain}: R^2 {q['r2']:.4f}, RMSE {q['rmse']:.4g}, leave-one-out RMSE {loo}")
  print(f"optimum ({report['objective']['description']}): {rates}")
  ci = report.get("optimum_ci") or {}
  if "rates" in ci:
    print(f"  {int(100 * ci['level'])}% CI: " + ", ".join(
        f"{d} [{lo:.3f}, {hi:.3f}]" for d, (lo, hi) in ci["rates"].items()))
  elif "skipped" in ci:
    print(f"  no CI: {ci['skipped']}")
  for note in report["notes"][1:]:
    print(f"  note: {note}")
  print(f"wrote {args.output}" + (f" and {args.plot}" if args.plot else ""))


def main(argv=None) -> int:
  return cli.run("heph_jax.mixing", define_flags, _command, argv)


if __name__ == "__main__":
  sys.exit(main())
