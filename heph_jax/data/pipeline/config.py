"""Data config checks and mixture rates: what the pipeline reads, validated before anything runs."""
from __future__ import annotations

import glob
import os

import ml_collections

from heph_jax.errors import ConfigError


def _glob(pattern: str) -> list[str]:
  """Local globs by the standard library; gs:// (any URI) through tf.io.gfile, which globs there."""
  if "://" in pattern:
    import tensorflow as tf
    return tf.io.gfile.glob(pattern)
  return glob.glob(pattern)


def source_files(data_cfg: ml_collections.ConfigDict, task: str) -> list[str]:
  patterns = data_cfg.sources[task]
  patterns = [patterns] if isinstance(patterns, str) else list(patterns)
  files = sorted({f for p in patterns for f in _glob(p)})
  if not files:
    raise ConfigError(f"config.data.sources.{task}: no file matches {patterns!r} "
                      f"(working directory {os.getcwd()})")
  return files


def task_rates(data_cfg: ml_collections.ConfigDict) -> dict[str, float]:
  """Per-task sampling rates (sum 1): from data.rates_file if set, else data.rates."""
  tasks = list(data_cfg.sources.keys())
  if data_cfg.rates_file:
    from heph_jax.data.pipeline.rates import domain_to_task_rates, read_rates_file
    loaded = read_rates_file(data_cfg.rates_file)
    if "task_rates" in loaded:
      rates = dict(loaded["task_rates"])
    else:
      within = {t: float(r) for t, r in data_cfg.rates.items()} if "rates" in data_cfg else None
      rates = domain_to_task_rates(loaded["rates"], data_cfg.domains.to_dict(), within)
    where = f"config.data.rates_file ({data_cfg.rates_file})"
  else:
    rates = {t: float(r) for t, r in data_cfg.rates.items()}
    where = "config.data.rates"
  unknown = sorted(set(rates) - set(tasks))
  if unknown:
    raise ConfigError(f"{where}: task(s) {unknown} have no entry in config.data.sources ({tasks})")
  rates = {t: float(rates.get(t, 0.0)) for t in tasks}
  if any(r < 0 for r in rates.values()):
    raise ConfigError(f"{where}: rates must be >= 0, got {rates}")
  total = sum(rates.values())
  if total <= 0:
    raise ConfigError(f"{where}: rates sum to {total}; at least one task needs a positive rate")
  return {t: r / total for t, r in rates.items()}


def validate_data_config(data_cfg: ml_collections.ConfigDict) -> None:
  if not data_cfg.sources:
    raise ConfigError("config.data.sources: no data sources configured")
  if data_cfg.loss_on not in ("all", "completions"):
    raise ConfigError(f"config.data.loss_on: must be 'all' or 'completions', got {data_cfg.loss_on!r}")
  if data_cfg.on_error not in ("raise", "skip"):
    raise ConfigError(f"config.data.on_error: must be 'raise' or 'skip', got {data_cfg.on_error!r}")
  if not 0.0 < data_cfg.validation_fraction < 1.0:
    raise ConfigError(f"config.data.validation_fraction: must lie in (0, 1), got {data_cfg.validation_fraction}")
  if data_cfg.get("process_sharding", "auto") not in ("auto", "rows", "records"):
    raise ConfigError(f"config.data.process_sharding: must be 'auto', 'rows' or 'records', "
                      f"got {data_cfg.process_sharding!r}")
  for key in ("num_shards", "shard_min_records", "prepare_workers"):
    if int(data_cfg.get(key, 1)) < 1:
      raise ConfigError(f"config.data.{key}: must be >= 1, got {data_cfg.get(key)}")
  if data_cfg.pack_rows < 1:
    raise ConfigError(f"config.data.pack_rows: must be >= 1, got {data_cfg.pack_rows}")
  spec = str(data_cfg.tokenizer)
  if not spec.startswith(("sp:", "hf:")):
    raise ConfigError(f"config.data.tokenizer: must be 'sp:PATH' or 'hf:DIR', got {spec!r}")
  if not os.path.exists(spec[3:]):
    raise ConfigError(f"config.data.tokenizer: {spec[3:]!r} does not exist (working directory {os.getcwd()})")
  for task in data_cfg.sources.keys():
    source_files(data_cfg, task)
  task_rates(data_cfg)


def resolved_process_sharding(data_cfg: ml_collections.ConfigDict, process_count: int) -> str:
  """"auto" -> "records" on several processes (each host reads only its own shard files), else
  "rows". Ask for "rows" explicitly where losses must not depend on the host count."""
  mode = data_cfg.get("process_sharding", "auto")
  if mode == "auto":
    return "records" if process_count > 1 else "rows"
  return mode
