"""Metrics sinks on clu: WORKDIR/metrics.jsonl, TensorBoard and the console line (process 0 only).

`create_writer` fans one `write_scalars` out to all three (clu's MultiWriter); clu's ReportProgress
measures steps/s (compile time excluded: it starts at the first report) and writes it to the same
writer, from which the console line derives tokens/s and the ETA. metrics.jsonl stays a plain JSON
Lines log because the mixing sweep and the tests read it back (`read_metrics`).
"""
from __future__ import annotations

import contextlib
import json
from typing import Any, Mapping

from clu import metric_writers, periodic_actions
from etils import epath  # every workdir path through one file API: gs:// works as local disk

METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: str) -> list[dict]:
  """Every record of WORKDIR/metrics.jsonl in order ([] before the first write). A resumed run logs
  the steps after its checkpoint again; a line cut short by a kill is skipped."""
  path = epath.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  from heph_jax.data.forge import io as forge_io
  return [record for _, record in forge_io.iter_json_objects(path, on_error="skip")]


class _ScalarsOnly(metric_writers.MetricWriter):
  """A MetricWriter that only handles scalars (the rest of clu's interface is ignored)."""

  def write_summaries(self, step, values, metadata=None):
    pass

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


class JsonlWriter(_ScalarsOnly):
  """One JSON object per write: {"step": N, name: value, ...}, flushed at once."""

  def __init__(self, path: epath.Path):
    self._files = contextlib.ExitStack()  # epath's open on gs:// is a context manager
    self._file = self._files.enter_context(path.open("a"))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()

  def close(self):
    self._files.close()


def _format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class ConsoleWriter(_ScalarsOnly):
  """The progress line: step, loss, tokens/s, lr, eval losses, ETA (from clu's steps_per_sec)."""

  def __init__(self, num_train_steps: int, tokens_per_step: int):
    self.num_train_steps, self.tokens_per_step = num_train_steps, tokens_per_step
    self._steps_per_sec = None

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    if "steps_per_sec" in scalars:
      self._steps_per_sec = float(scalars["steps_per_sec"])
    evals = {k.split("/", 1)[1]: v for k, v in scalars.items() if k.startswith("eval_loss/")}
    calls = {k.split("/", 1)[1]: v for k, v in scalars.items() if k.startswith("fc_accuracy/")}
    if calls:
      print(f"step {step}/{self.num_train_steps} | function calling "
            + " ".join(f"{k} {v:.3f}" for k, v in calls.items()), flush=True)
    if "loss" not in scalars and not evals:
      return
    parts = [f"step {step}/{self.num_train_steps}"]
    if "loss" in scalars:
      parts.append(f"loss {scalars['loss']:.4f}")
      if self._steps_per_sec:
        parts.append(f"{self._steps_per_sec * self.tokens_per_step:,.0f} tok/s")
    if "learning_rate" in scalars:
      parts.append(f"lr {scalars['learning_rate']:.2e}")
    if evals:
      parts.append("eval " + " ".join(f"{k} {v:.4f}" for k, v in evals.items()))
    if self._steps_per_sec and "loss" in scalars:
      parts.append(f"ETA {_format_duration((self.num_train_steps - step) / self._steps_per_sec)}")
    print(" | ".join(parts), flush=True)


def create_writer(workdir: str, num_train_steps: int, tokens_per_step: int, enabled: bool = True,
                  tensorboard: bool = True) -> metric_writers.MetricWriter:
  """metrics.jsonl + TensorBoard + console on process 0; writes nothing elsewhere."""
  if not enabled:
    return metric_writers.MultiWriter([])
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  writers = [JsonlWriter(epath.Path(workdir) / METRICS_FILE)]
  if tensorboard:  # TensorBoard's writer goes through tf.io.gfile itself
    writers.append(metric_writers.SummaryWriter(str(epath.Path(workdir) / "tensorboard")))
  writers.append(ConsoleWriter(num_train_steps, tokens_per_step))
  return metric_writers.MultiWriter(writers)


def report_progress(writer, num_train_steps: int, every_steps: int) -> periodic_actions.ReportProgress:
  """clu's steps/s measurement, written to `writer` every `every_steps` steps."""
  return periodic_actions.ReportProgress(num_train_steps=num_train_steps, writer=writer,
                                         every_steps=every_steps, every_secs=None)
