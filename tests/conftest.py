"""Test setup: 8 simulated CPU devices, quiet TensorFlow, shared fixtures."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")

import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root():
  return REPO_ROOT


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: longer than ~30 s; run with -m slow")
  config.addinivalue_line("markers", "tpu_aot: compiles for TPU with libtpu (needs the test extra)")
