"""The sweep's record of finished runs (runs.jsonl): reading, validation, writing.

One JSON object per line:
  {"mixture": {"agent": 0.3, "code": 0.35, "text": 0.35},   # training proportions, sum 1
   "eval_loss": {"agent": 2.1, "code": 1.9, "text": 2.4},   # final eval loss per domain
   "steps": 200, "params": 1050000,
   "history": [{"step": 50, "eval_loss": {...}}, ...]}      # optional: eval curve
"""
from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
from etils import epath

from heph_jax.errors import HephError

SUM_TOLERANCE = 1e-6


class RunsError(HephError, ValueError):
  """runs.jsonl (or a list of run records) is malformed; the message names the line."""


@dataclasses.dataclass
class RunTable:
  domains: tuple[str, ...]          # mixture domains, sorted
  eval_domains: tuple[str, ...]     # eval-loss domains, sorted
  mixtures: np.ndarray              # [num_runs, num_domains], rows sum to 1
  losses: dict[str, np.ndarray]     # eval domain -> [num_runs]
  records: list[dict]               # the validated records, in file order
  source: str = "<records>"

  @property
  def num_runs(self) -> int:
    return self.mixtures.shape[0]

  def with_losses(self, losses: dict[str, np.ndarray]) -> "RunTable":
    return dataclasses.replace(self, losses={k: np.asarray(v, float) for k, v in losses.items()})


def _number(value, where: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise RunsError(f"{where}: expected a number, got {value!r}")
  return float(value)


def validate_mixture(mixture, where: str) -> dict[str, float]:
  """Checks a {domain: proportion} dict: numbers, >= 0, summing to 1 within 1e-6."""
  if not isinstance(mixture, dict) or not mixture:
    raise RunsError(f"{where}: 'mixture' must be a non-empty object of domain proportions")
  values = {str(k): _number(v, f"{where}: mixture[{k!r}]") for k, v in mixture.items()}
  for name, value in values.items():
    if not math.isfinite(value) or value < 0:
      raise RunsError(f"{where}: mixture[{name!r}] = {value}; proportions must be finite and >= 0")
  total = sum(values.values())
  if abs(total - 1.0) > SUM_TOLERANCE:
    raise RunsError(
        f"{where}: mixture proportions sum to {total:.8g}, expected 1 (within {SUM_TOLERANCE}); "
        "write each domain's share of the training tokens")
  return {k: v / total for k, v in values.items()}


def _validate_record(record, where: str) -> tuple[dict, dict]:
  if not isinstance(record, dict):
    raise RunsError(f"{where}: expected a JSON object, got {type(record).__name__}")
  for key in ("mixture", "eval_loss"):
    if key not in record:
      raise RunsError(f"{where}: missing key '{key}'")
  mixture = validate_mixture(record["mixture"], where)
  losses = record["eval_loss"]
  if not isinstance(losses, dict) or not losses:
    raise RunsError(f"{where}: 'eval_loss' must be a non-empty object {{domain: loss}}")
  values = {}
  for name, value in losses.items():
    if value is None:
      value = float("nan")
    value = _number(value, f"{where}: eval_loss[{name!r}]")
    if not math.isfinite(value):
      raise RunsError(
          f"{where}: eval_loss[{name!r}] is {value} (a diverged or broken run?); "
          "rerun it or delete the line")
    values[str(name)] = value
  return mixture, values


def table_from_records(records: list[dict], source: str = "<records>",
                       line_numbers: list[int] | None = None) -> RunTable:
  if not records:
    raise RunsError(f"{source}: no runs")
  line_numbers = line_numbers or list(range(1, len(records) + 1))
  mixtures, losses, domains, eval_domains = [], [], None, None
  for record, line in zip(records, line_numbers):
    where = f"{source}:{line}"
    mixture, loss = _validate_record(record, where)
    if domains is None:
      domains, eval_domains = sorted(mixture), sorted(loss)
    if sorted(mixture) != domains:
      raise RunsError(f"{where}: mixture domains {sorted(mixture)} differ from line "
                      f"{line_numbers[0]}'s {domains}")
    if sorted(loss) != eval_domains:
      raise RunsError(f"{where}: eval_loss domains {sorted(loss)} differ from line "
                      f"{line_numbers[0]}'s {eval_domains}")
    mixtures.append([mixture[d] for d in domains])
    losses.append([loss[d] for d in eval_domains])
  losses = np.asarray(losses, dtype=np.float64)
  return RunTable(
      domains=tuple(domains), eval_domains=tuple(eval_domains),
      mixtures=np.asarray(mixtures, dtype=np.float64),
      losses={d: losses[:, i] for i, d in enumerate(eval_domains)},
      records=list(records), source=source)


def read_run_lines(path: str) -> tuple[list[dict], list[int]]:
  """Parsed lines of a runs.jsonl file (blank lines skipped) and their line numbers."""
  from heph_jax.data.forge import io as forge_io
  if not epath.Path(path).exists():
    raise RunsError(f"{path}: no such runs file (run `python -m heph_jax.mixing sweep` first)")
  records, lines = [], []
  try:
    for number, record in forge_io.iter_json_objects(path, allow_empty=True):
      records.append(record)
      lines.append(number)
  except forge_io.ForgeDataError as e:
    raise RunsError(str(e)) from None
  return records, lines


def read_runs(path: str) -> RunTable:
  records, lines = read_run_lines(path)
  if not records:
    raise RunsError(f"{path}: the file has no runs")
  return table_from_records(records, source=path, line_numbers=lines)


def append_record(path: str, record: dict) -> None:
  """Appends one line and syncs it, so a crash never leaves a half-written record behind."""
  line = json.dumps(record, sort_keys=True) + "\n"
  with epath.Path(path).open("a") as f:  # gs:// too (tf.io.gfile appends)
    f.write(line)
    f.flush()
    if hasattr(f, "fileno"):  # a local file: sync it to disk
      os.fsync(f.fileno())
