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
