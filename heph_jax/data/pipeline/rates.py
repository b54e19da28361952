"""Rates files: domain rates (agent/code/text) <-> task rates (tool_doc/trajectory/code/text).

A rates file (written by `python -m heph_jax.mixing fit`) is JSON with at least
  {"rates": {"agent": 0.36, "code": 0.32, "text": 0.32},
   "task_rates": {"tool_doc": 0.18, "trajectory": 0.18, "code": 0.32, "text": 0.32}}
Training configs point at one with data.rates_file; read_rates_file returns the checked file
content and read_task_rates the task rates in it.
"""
from __future__ import annotations

import json
import math
import os

from etils import epath

from heph_jax.errors import HephError

RATE_TOLERANCE = 1e-6

# The agent domain is the two agent sources together (paper sec. 5).
DEFAULT_DOMAINS = {"agent": ["tool_doc", "trajectory"], "code": ["code"], "text": ["text"]}


class RatesError(HephError, ValueError):
  """Bad rates or rates file; the message names the file or key."""


def to_plain(value):
  """ConfigDicts (and their tuples) to plain dicts/lists."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: to_plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_plain(v) for v in value]
  return value


def validate_rates(rates, what: str = "rates") -> dict[str, float]:
  """{name: rate} with numbers >= 0 that sum to 1 within 1e-6; returned as floats."""
  rates = to_plain(rates)
  if not isinstance(rates, dict) or not rates:
    raise RatesError(f"{what}: expected a non-empty object {{name: rate}}, got {rates!r}")
  out = {}
  for name, value in rates.items():
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise RatesError(f"{what}: rate for '{name}' is {value!r}, expected a number")
    if not math.isfinite(value) or value < 0:
      raise RatesError(f"{what}: rate for '{name}' is {value}, expected a finite number >= 0")
    out[str(name)] = float(value)
  total = sum(out.values())
  if abs(total - 1.0) > RATE_TOLERANCE:
    raise RatesError(f"{what}: rates sum to {total:.8g}, expected 1 (within {RATE_TOLERANCE})")
  return out


def normalize_domains(domains=None) -> dict[str, list[str]]:
  """The domain -> tasks map (config.data.domains), checked: each task in exactly one domain."""
  if domains is None:
    return {k: list(v) for k, v in DEFAULT_DOMAINS.items()}
  domains = to_plain(domains)
  if not isinstance(domains, dict) or not domains:
    raise RatesError(f"data.domains: expected {{domain: [task, ...]}}, got {domains!r}")
  seen = {}
  out = {}
  for domain, tasks in domains.items():
    if isinstance(tasks, str):
      tasks = [tasks]
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
      raise RatesError(f"data.domains['{domain}']: expected a non-empty list of task names, "
                       f"got {tasks!r}")
    for task in tasks:
      if task in seen:
        raise RatesError(f"data.domains: task '{task}' is in both '{seen[task]}' and '{domain}'")
      seen[task] = domain
    out[str(domain)] = list(tasks)
  return out


def domain_to_task_rates(domain_rates: dict, domains: dict | None = None,
                         within: dict | None = None) -> dict[str, float]:
  """Splits each domain's rate over its tasks: by `within` weights, or equally if not given.

  within: {task: weight}; weights are relative within a domain (normalized to sum 1 there), so
  task rates such as config.data.rates work too. A domain named in it must list all its tasks.
  """
  rates = validate_rates(domain_rates, "domain rates")
  domains = normalize_domains(domains)
  unknown = sorted(set(rates) - set(domains))
  if unknown:
    raise RatesError(f"domain rates name {unknown}, not in the domain map {sorted(domains)}")
  missing = sorted(set(domains) - set(rates))
  if missing:
    raise RatesError(f"domain rates lack {missing} (domain map has {sorted(domains)}); "
                     "give every domain a rate, 0 if unused")
  within = to_plain(within) or {}
  all_tasks = {t for tasks in domains.values() for t in tasks}
  stray = sorted(set(within) - all_tasks)
  if stray:
    raise RatesError(f"within-domain weights name {stray}, not tasks of any domain")
  task_rates = {}
  for domain, tasks in domains.items():
    given = [t for t in tasks if t in within]
    if given:
      if len(given) != len(tasks):
        raise RatesError(f"within-domain weights for '{domain}' cover {given} but not "
                         f"{sorted(set(tasks) - set(given))}")
      weights = {}
      for task in tasks:
        w = within[task]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
          raise RatesError(f"within-domain weight for '{task}' is {w!r}, expected a number >= 0")
        weights[task] = float(w)
      total = sum(weights.values())
      if total <= 0:
        raise RatesError(f"within-domain weights for '{domain}' ({weights}) are all 0")
      shares = {t: w / total for t, w in weights.items()}
    else:
      shares = {t: 1.0 / len(tasks) for t in tasks}
    for task in tasks:
      task_rates[task] = rates[domain] * shares[task]
  return task_rates


def read_rates_file(path: str, domains: dict | None = None) -> dict:
  """The content of a rates file, with "rates" and/or "task_rates" checked (sum 1, >= 0).

  When both are present (as `fit` writes them) each domain rate must equal its tasks' sum under
  `domains` (default: DEFAULT_DOMAINS).
  """
  if not epath.Path(path).exists():
    raise RatesError(f"{path}: no such rates file (data.rates_file); write one with "
                     f"`python -m heph_jax.mixing fit --runs runs.jsonl --output {path}`")
  from heph_jax.data.forge.io import read_json_object
  data = read_json_object(path, RatesError)
  if not ("rates" in data or "task_rates" in data):
    found = sorted(data) if isinstance(data, dict) else type(data).__name__
    raise RatesError(f"{path}: expected a JSON object with 'rates' and/or 'task_rates', found {found}")
  data = dict(data)
  if "rates" in data:
    data["rates"] = validate_rates(data["rates"], f"{path}: rates")
  if "task_rates" in data:
    data["task_rates"] = validate_rates(data["task_rates"], f"{path}: task_rates")
  if "rates" in data and "task_rates" in data:
    _check_consistent(path, data["rates"], data["task_rates"], domains)
  return data


def read_task_rates(path: str, domains: dict | None = None,
                    within: dict | None = None) -> dict[str, float]:
  """Task rates of a rates file: its "task_rates", else its "rates" split over the domains."""
  data = read_rates_file(path, domains)
  if "task_rates" in data:
    return data["task_rates"]
  try:
    return domain_to_task_rates(data["rates"], domains, within)
  except RatesError as e:
    raise RatesError(f"{path}: {e}") from None


def _check_consistent(path, rates, task_rates, domains):
  """Domain rates must equal their tasks' sums when the file holds both."""
  domains = normalize_domains(domains)
  if set(rates) != set(domains) or set(task_rates) != {t for v in domains.values() for t in v}:
    return  # a custom domain map we do not know; trust task_rates
  for domain, tasks in domains.items():
    total = sum(task_rates[t] for t in tasks)
    if abs(total - rates[domain]) > RATE_TOLERANCE:
      raise RatesError(f"{path}: task_rates of {tasks} sum to {total:.6g} but rates['{domain}'] "
                       f"is {rates[domain]:.6g}")


def write_json(path: str, data: dict) -> None:
  """Writes via a temporary file and rename, so readers never see half a file (epath: gs:// too)."""
  target = epath.Path(path if "://" in str(path) else os.path.abspath(path))
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.parent / (target.name + ".tmp")
  tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
  tmp.replace(target)
