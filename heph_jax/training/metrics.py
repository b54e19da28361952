"""Metrics sinks: console progress line, WORKDIR/metrics.jsonl, TensorBoard (process 0 only)."""
from __future__ import annotations

import contextlib
import json
import sys
import time

from etils import epath  # every workdir path through one file API: gs:// works as local disk


METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: str) -> list[dict]:
  """Every record of WORKDIR/metrics.jsonl in order ([] before the first write). A resumed run logs
  the steps after its checkpoint again; a line cut short by a kill is skipped."""
  path = epath.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  records = []
  with path.open("r") as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def _format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class MetricsLogger:

  def __init__(self, workdir: str, num_train_steps: int, enabled: bool = True, tensorboard: bool = True):
    self.enabled, self.num_train_steps = enabled, num_train_steps
    self._jsonl = None
    self._writer = None
    if not enabled:
      return
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    self._files = contextlib.ExitStack()  # epath's open is a context manager
    self._jsonl = self._files.enter_context((epath.Path(workdir) / METRICS_FILE).open("a"))
    if tensorboard:  # TensorBoard's writer goes through tf.io.gfile itself
      from clu import metric_writers
      self._writer = metric_writers.SummaryWriter(str(epath.Path(workdir) / "tensorboard"))

  def write(self, step: int, metrics: dict, eta_seconds: float | None = None) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    if self._writer is not None:
      self._writer.write_scalars(int(step), {k: float(v) for k, v in metrics.items()})
      self._writer.flush()
    self.console(step, metrics, eta_seconds)

  def console(self, step: int, metrics: dict, eta_seconds: float | None = None) -> None:
    parts = [f"step {step}/{self.num_train_steps}"]
    if "loss" in metrics:
      parts.append(f"loss {metrics['loss']:.4f}")
    if "tokens_per_second" in metrics:
      parts.append(f"{metrics['tokens_per_second']:,.0f} tok/s")
    if "mfu" in metrics and metrics["mfu"] > 0:
      parts.append(f"MFU {100 * metrics['mfu']:.1f}%")
    if "learning_rate" in metrics:
      parts.append(f"lr {metrics['learning_rate']:.2e}")
    evals = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("eval_loss/")}
    if evals:
      parts.append("eval " + " ".join(f"{k} {v:.4f}" for k, v in evals.items()))
    if eta_seconds is not None:
      parts.append(f"ETA {_format_duration(eta_seconds)}")
    print(" | ".join(parts), flush=True)

  def info(self, message: str) -> None:
    if self.enabled:
      print(message, file=sys.stdout, flush=True)

  def close(self) -> None:
    if self._jsonl:
      self._files.close()
    if self._writer is not None:
      self._writer.close()


class Throughput:
  """Tokens/s and ETA over the steps since the last report (compile time excluded)."""

  def __init__(self):
    self._t, self._tokens = time.perf_counter(), 0.0
    self._steps = 0

  def add(self, tokens: float) -> None:
    self._tokens += tokens
    self._steps += 1

  def report(self) -> tuple[float, float]:
    now = time.perf_counter()
    elapsed = max(now - self._t, 1e-9)
    rate, step_time = self._tokens / elapsed, elapsed / max(self._steps, 1)
    self._t, self._tokens, self._steps = now, 0.0, 0
    return rate, step_time
