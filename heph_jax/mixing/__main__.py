"""python -m heph_jax.mixing {sweep,fit} ...

  sweep: train one small model per mixture of a sweep config; records DIR/runs.jsonl.
  fit:   fit a mixing law to runs.jsonl; writes the optimal rates (rates.json) and a plot.
"""
from __future__ import annotations

import argparse
import sys

from heph_jax.errors import HephError
from heph_jax.mixing.laws import MIXING_LAWS


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m heph_jax.mixing", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest="command", required=True)

  sweep = commands.add_parser("sweep", help="train a grid of small models, one per mixture")
  sweep.add_argument("--config", required=True, help="sweep config file (e.g. configs/mixing_sweep.py)")
  sweep.add_argument("--workdir", required=True, help="sweep directory; runs.jsonl goes here")
  sweep.add_argument("--steps", type=int, default=None, help="training steps per run (overrides the config)")
  sweep.add_argument("--dry-run", action="store_true", help="print the planned runs and exit")

  fit = commands.add_parser("fit", help="fit a mixing law and write the optimal rates")
  fit.add_argument("--runs", required=True, help="runs.jsonl written by `sweep`")
  fit.add_argument("--output", required=True, help="rates file to write (JSON)")
  fit.add_argument("--law", default="exponential", choices=sorted(MIXING_LAWS),
                   help="exponential: Ye et al. 2024 (default); tradeoff/quadratic: 1-D in --axis")
  fit.add_argument("--objective", default="mean",
                   help="'mean' of all eval losses (default), one domain ('agent'), or weights "
                        "('agent=0.5,code=0.25,text=0.25')")
  fit.add_argument("--axis", default="agent", help="the domain whose ratio a 1-D view reads (default agent)")
  fit.add_argument("--min", action="append", default=[], metavar="DOMAIN=P", help="lower bound, repeatable")
  fit.add_argument("--max", action="append", default=[], metavar="DOMAIN=P", help="upper bound, repeatable")
  fit.add_argument("--ratio", action="append", default=[], metavar="A:B=X:Y",
                   help="fixed ratio of two domains, e.g. code:text=1:1; repeatable")
  fit.add_argument("--within-runs", action="store_true",
                   help="search only within each domain's range of proportions in the runs "
                        "(no extrapolation)")
  fit.add_argument("--target-steps", type=int, default=None,
                   help="extrapolate each run to this many steps with L(S)=E+B/S^beta first")
  fit.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates for the CI (0: none)")
  fit.add_argument("--level", type=float, default=0.95, help="confidence level of the CI")
  fit.add_argument("--restarts", type=int, default=8, help="optimizer restarts per fit")
  fit.add_argument("--seed", type=int, default=0)
  fit.add_argument("--config", default=None,
                   help="a sweep or training config whose data.domains / domains and within "
                        "map domains to tasks for task_rates (default: agent=tool_doc+trajectory)")
  fit.add_argument("--plot", default=None, help="PNG to write: observed points, fitted curves, optimum")
  return parser


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
  from heph_jax.mixing import rates as rates_lib
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
  args = _parser().parse_args(argv)
  try:
    return _sweep(args) if args.command == "sweep" else _fit(args)
  except HephError as e:
    print(f"heph_jax.mixing: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
