"""Sweep runner: train one small model per mixture and record its per-domain eval losses.

Each run trains with the normal trainer in WORKDIR/runs/<mixture tag>/ and, once finished, adds
one line to WORKDIR/runs.jsonl (see runs.py). Runs already in runs.jsonl are skipped, and a run
that was interrupted resumes from its own checkpoint, so the sweep can be restarted at will.
"""
from __future__ import annotations

import copy
import os
import time
from typing import Callable

import ml_collections

from heph_jax.data.pipeline import rates as rates_lib
from heph_jax.mixing.runs import RunsError, append_record, read_run_lines, validate_mixture
from heph_jax.training.metrics import read_metrics
from heph_jax.errors import HephError


class SweepError(HephError, ValueError):
  """Bad sweep config or inconsistent sweep directory; the message names the key or file."""


def _default_train_fn(config, workdir):
  from heph_jax.train import train_and_evaluate  # late: keeps fitting free of JAX imports
  return train_and_evaluate(config, workdir)


def _default_load_config(path):
  from heph_jax.config import load_config_file
  return load_config_file(path)


def _resolve_base(base: str, sweep_path: str | None) -> str:
  candidates = [base, base + ".py"]
  if sweep_path:
    folder = os.path.dirname(os.path.abspath(sweep_path))
    candidates += [os.path.join(folder, base), os.path.join(folder, base + ".py")]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return candidate
  raise SweepError(f"sweep config base_config: no config file {base!r} (looked at {candidates})")


def apply_overrides(config: ml_collections.ConfigDict, overrides, where: str = "overrides") -> None:
  """Sets nested values of `config`; every key must already exist there."""
  if hasattr(overrides, "to_dict"):
    overrides = overrides.to_dict()
  for key, value in (overrides or {}).items():
    path = f"{where}.{key}"
    if key not in config:
      raise SweepError(f"sweep config {path}: the base config has no key '{key}'")
    if isinstance(value, dict) and isinstance(config[key], ml_collections.ConfigDict):
      apply_overrides(config[key], value, path)
      continue
    try:
      config[key] = value
    except (TypeError, ValueError) as e:
      raise SweepError(f"sweep config {path}: cannot set {value!r} ({e})") from None


def mixture_tag(mixture: dict[str, float], steps: int) -> str:
  parts = "_".join(f"{d}{mixture[d]:.3f}" for d in sorted(mixture))
  return f"s{steps}_{parts}"


def _mixture_key(mixture: dict) -> tuple:
  return tuple((d, round(float(v), 6)) for d, v in sorted(mixture.items()))


def _task_evals(workdir: str) -> dict[int, dict[str, float]]:
  """step -> {task: eval loss} from the trainer's metrics.jsonl (later lines win)."""
  by_step = {}
  for record in read_metrics(workdir):
    evals = {k.split("/", 1)[1]: v for k, v in record.items() if k.startswith("eval_loss/")}
    if evals and "step" in record:
      by_step.setdefault(int(record["step"]), {}).update(evals)
  return by_step


def _history(workdir: str, domains: dict[str, list[str]]) -> list[dict]:
  """Per-step domain eval losses (steps where every domain's tasks were evaluated)."""
  by_step = _task_evals(workdir)
  history = []
  for step in sorted(by_step):
    tasks = by_step[step]
    losses = {d: sum(tasks[t] for t in ts) / len(ts) for d, ts in domains.items()
              if all(t in tasks for t in ts)}
    if len(losses) == len(domains):
      history.append({"step": step, "eval_loss": losses})
  return history


def domain_losses(task_losses: dict, domains: dict[str, list[str]], where: str) -> dict[str, float]:
  """Mean of each domain's task eval losses."""
  out = {}
  for domain, tasks in domains.items():
    missing = [t for t in tasks if t not in task_losses]
    if missing:
      raise SweepError(f"{where}: the trainer reported no eval loss for {missing} (domain "
                       f"'{domain}'); it reported {sorted(task_losses)}")
    out[domain] = float(sum(float(task_losses[t]) for t in tasks) / len(tasks))
  return out


def plan_sweep(sweep: ml_collections.ConfigDict, sweep_path: str | None = None, *,
               steps: int | None = None, load_config: Callable | None = None):
  """The base training config (overrides applied), the domain map and the validated mixtures."""
  load_config = load_config or _default_load_config
  for key in ("base_config", "mixtures"):
    if key not in sweep:
      raise SweepError(f"sweep config: missing key '{key}'")
  base = load_config(_resolve_base(sweep.base_config, sweep_path))
  apply_overrides(base, sweep.get("overrides"))
  steps = int(steps if steps is not None else sweep.get("steps", 0) or base.num_train_steps)
  if steps <= 0:
    raise SweepError(f"sweep steps must be > 0, got {steps}")
  num_evals = int(sweep.get("num_evals", 4))
  if num_evals < 1:
    raise SweepError(f"sweep config num_evals: must be >= 1, got {num_evals}")
  base.num_train_steps = steps
  base.eval_every_steps = max(1, steps // num_evals)
  base.checkpoint_every_steps = steps
  if base.optimizer.warmup_steps > steps:
    base.optimizer.warmup_steps = max(1, steps // 10)
  domains = rates_lib.normalize_domains(sweep.get("domains") or base.data.get("domains"))
  within = sweep.get("within")
  mixtures, seen = [], set()
  raw = list(sweep.mixtures)
  if not raw:
    raise SweepError("sweep config mixtures: empty list")
  for i, mixture in enumerate(raw):
    where = f"sweep config mixtures[{i}]"
    mixture = rates_lib.to_plain(mixture)
    try:
      mixture = validate_mixture(mixture, where)
    except RunsError as e:
      raise SweepError(str(e)) from None
    if set(mixture) != set(domains):
      raise SweepError(f"{where}: domains {sorted(mixture)} differ from the domain map "
                       f"{sorted(domains)} (sweep config domains / data.domains)")
    if _mixture_key(mixture) in seen:
      raise SweepError(f"{where}: {mixture} appears twice")
    seen.add(_mixture_key(mixture))
    task_rates = rates_lib.domain_to_task_rates(mixture, domains, within)
    mixtures.append((mixture, task_rates))
  return base, domains, mixtures


def run_sweep(sweep: ml_collections.ConfigDict, workdir: str, *, sweep_path: str | None = None,
              steps: int | None = None, train_fn: Callable | None = None,
              load_config: Callable | None = None, log: Callable = print) -> list[dict]:
  """Runs every mixture not yet in WORKDIR/runs.jsonl; returns all records of the sweep."""
  train_fn = train_fn or _default_train_fn
  base, domains, mixtures = plan_sweep(sweep, sweep_path, steps=steps, load_config=load_config)
  steps = base.num_train_steps
  os.makedirs(workdir, exist_ok=True)
  runs_path = os.path.join(workdir, "runs.jsonl")
  done = {}
  if os.path.exists(runs_path):
    records, lines = read_run_lines(runs_path)
    for record, line in zip(records, lines):
      if record.get("steps") != steps:
        raise SweepError(f"{runs_path}:{line}: a run of {record.get('steps')} steps, but this sweep "
                         f"trains {steps}; use another --workdir for a different length")
      done[_mixture_key(record["mixture"])] = record
  for i, (mixture, task_rates) in enumerate(mixtures):
    tag = mixture_tag(mixture, steps)
    if _mixture_key(mixture) in done:
      log(f"[{i + 1}/{len(mixtures)}] {tag}: already in runs.jsonl, skipped")
      continue
    config = copy.deepcopy(base)
    config.data.rates = ml_collections.ConfigDict(task_rates)
    config.data.rates_file = ""
    if "cache_dir" in config.data and not config.data.cache_dir:
      # Tokenized shards do not depend on the rates: prepare them once for the whole sweep.
      config.data.cache_dir = os.path.join(workdir, "data_cache")
    run_dir = os.path.join(workdir, "runs", tag)
    log(f"[{i + 1}/{len(mixtures)}] {tag}: training {steps} steps in {run_dir}")
    start = time.time()
    result = train_fn(config, run_dir)
    where = f"run {run_dir}"
    task_losses = dict(result.get("eval_loss") or {})
    if not task_losses:
      # A run that had finished before a kill returns at once, without evaluating: use the
      # final eval it logged.
      task_losses = _task_evals(run_dir).get(int(result.get("step", -1)), {})
    if int(result.get("step", -1)) < steps:
      raise SweepError(f"{where}: the trainer stopped at step {result.get('step')} of {steps} "
                       "(preempted?); rerun the sweep to resume it")
    record = {
        "mixture": mixture,
        "eval_loss": domain_losses(task_losses, domains, where),
        "steps": int(result["step"]),
        "params": int(result.get("params", 0)),
        "task_rates": task_rates,
        "task_eval_loss": {k: float(v) for k, v in task_losses.items()},
        "history": _history(run_dir, domains),
        "workdir": run_dir,
        "seconds": round(time.time() - start, 1),
    }
    append_record(runs_path, record)
    done[_mixture_key(mixture)] = record
    log(f"    eval loss {record['eval_loss']} ({record['seconds']} s)")
  return [done[_mixture_key(m)] for m, _ in mixtures]
