"""Process set-up the benchmarks share: call `real_devices()` before jax is imported.

Benchmarks measure the machine's real devices: tests/conftest.py's 8 simulated CPU devices would
split the same cores 8 ways. The repo root goes on sys.path so that `heph_jax` imports from a
checkout without an install.
"""
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def real_devices() -> None:
  os.environ["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\S+", "",
                                   os.environ.get("XLA_FLAGS", "")).strip()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if REPO not in sys.path:
    sys.path.insert(0, REPO)


# A run is taken as idle when the 1-minute load average per core is at most this: other
# processes then hold well under a core of the 2 we measure on.
IDLE_LOAD_PER_CORE = 0.25


def machine_load() -> dict:
  """The load when a benchmark starts: 1-minute load average, cores, and whether that is idle."""
  load, cores = os.getloadavg()[0], os.cpu_count() or 1
  return {"load_average_1m": round(load, 2), "cores": cores,
          "idle": load / cores <= IDLE_LOAD_PER_CORE}


def refuse_if_loaded(load: dict, allow_loaded: bool, script: str) -> None:
  """Stops a benchmark on a busy machine (its figures would not be figures) unless allowed; a
  run allowed on a loaded machine carries "idle": false in its JSON line."""
  if not load["idle"] and not allow_loaded:
    raise SystemExit(f"{script}: load average {load['load_average_1m']} on {load['cores']} cores is "
                     f"above {IDLE_LOAD_PER_CORE} per core: figures taken under load are not figures. "
                     "Stop the other work, or pass --allow_loaded to measure anyway (flagged).")


def spread(values) -> dict:
  """Median and range of per-round figures."""
  import statistics
  values = list(values)
  return {"median": statistics.median(values), "min": min(values), "max": max(values)}
