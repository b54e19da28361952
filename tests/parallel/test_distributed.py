"""Multi-process start-up: config resolution, and real 2-process runs on localhost."""
import json
import os
import re
import socket
import subprocess
import sys
import time

import jax
import pytest

from heph_jax.parallel import distributed
from heph_jax.parallel.distributed import DistributedConfig, DistributedInitError

_HEPH_ENV = ("HEPH_COORDINATOR_ADDRESS", "HEPH_COORDINATOR_PORT",
             "HEPH_NUM_PROCESSES", "HEPH_PROCESS_ID", "HEPH_TPU_VM")

# One process of the simulated pod: joins, then checks a global reduction over
# all 8 devices (4 per process) against numpy on the whole array.
_WORKER = r"""
import json, sys
import numpy as np
from heph_jax.parallel import distributed
distributed.initialize({"initialization_timeout_s": int(sys.argv[1])})
import jax, jax.numpy as jnp
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

full = (np.arange(8 * 3, dtype=np.float32).reshape(8, 3) + 1.0) ** 2
pid = jax.process_index()
local_rows = full[pid * 4:(pid + 1) * 4]
mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
arr = jax.make_array_from_process_local_data(
    NamedSharding(mesh, P("data")), local_rows)
total = jax.jit(lambda x: jnp.sum(x), out_shardings=NamedSharding(mesh, P()))(arr)
print("RESULT", json.dumps({
    "process_index": pid, "primary": distributed.is_primary(),
    "process_count": jax.process_count(), "device_count": jax.device_count(),
    "local_device_count": jax.local_device_count(),
    "all_ids": multihost_utils.process_allgather(np.int32(pid)).tolist(),
    "total": float(total), "expected": float(full.sum()),
}), flush=True)
"""


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start_worker(repo_root, port, process_id, timeout_s):
  env = {k: v for k, v in os.environ.items() if k not in _HEPH_ENV}
  env.update({
      "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
      "JAX_PLATFORMS": "cpu",
      "PYTHONPATH": str(repo_root),
      "HEPH_COORDINATOR_ADDRESS": f"localhost:{port}",
      "HEPH_NUM_PROCESSES": "2",
      "HEPH_PROCESS_ID": str(process_id),
  })
  return subprocess.Popen(
      [sys.executable, "-c", _WORKER, str(timeout_s)], cwd=repo_root, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def clean_env(monkeypatch):
  for name in _HEPH_ENV:
    monkeypatch.delenv(name, raising=False)
  return monkeypatch


# --- two real processes ------------------------------------------------------

def test_two_processes_form_one_8_device_system(repo_root):
  port = _free_port()
  workers = [_start_worker(repo_root, port, i, 60) for i in range(2)]
  outputs = [w.communicate(timeout=180) for w in workers]
  results = []
  for w, (out, err) in zip(workers, outputs):
    assert w.returncode == 0, err[-3000:]
    # Gloo's C++ also writes to stdout, unsynchronised (even between "RESULT" and its JSON): find
    # the JSON object itself, which one write puts out whole.
    found = re.search(r"(\{\"process_index\".*?\})", out)
    assert found, out[-3000:]
    results.append(json.loads(found.group(1)))
  for i, r in enumerate(results):
    assert r["process_index"] == i
    assert r["primary"] == (i == 0)
    assert (r["process_count"], r["device_count"], r["local_device_count"]) == (2, 8, 4)
    assert r["all_ids"] == [0, 1]
    # Each process holds half the rows: only a true global reduction gives this.
    assert r["total"] == pytest.approx(r["expected"], rel=1e-6)


def test_missing_peer_exits_with_clear_message_after_timeout(repo_root):
  timeout_s = 10
  # Alone as coordinator (peer 1 never starts), and alone as peer (no coordinator).
  ports = [_free_port(), _free_port()]
  start = time.monotonic()
  workers = [_start_worker(repo_root, ports[i], i, timeout_s) for i in range(2)]
  for i, w in enumerate(workers):
    # A hang would blow this limit; JAX's own abort would give -6 (SIGABRT).
    _, err = w.communicate(timeout=timeout_s + 90)
    assert w.returncode == distributed.EXIT_CODE_INIT_TIMEOUT, err[-3000:]
    assert "DistributedInitError" in err
    assert f"localhost:{ports[i]}" in err
    assert f"process {i} of 2" in err
    assert f"within {timeout_s} s" in err
    assert "--worker=all" in err and "coordinator_port" in err
  assert time.monotonic() - start >= timeout_s


# --- config resolution (in process, no JAX start-up) ---------------------------

def test_defaults_match_config_section(clean_env):
  cfg = DistributedConfig.from_config(distributed.default_config())
  assert cfg == DistributedConfig()
  assert (cfg.coordinator_address, cfg.coordinator_port, cfg.num_processes,
          cfg.process_id, cfg.initialization_timeout_s, cfg.auto,
          cfg.cpu_collectives) == ("", 0, 0, -1, 300, True, "gloo")
  assert not cfg.has_explicit_cluster


def test_environment_overrides_config(clean_env):
  clean_env.setenv("HEPH_COORDINATOR_ADDRESS", "10.0.0.2:1234")
  clean_env.setenv("HEPH_NUM_PROCESSES", "16")
  clean_env.setenv("HEPH_PROCESS_ID", "7")
  section = distributed.default_config()
  section.coordinator_address = "other:1"
  section.num_processes = 2
  cfg = DistributedConfig.from_config(section)
  assert (cfg.coordinator_address, cfg.num_processes, cfg.process_id) == (
      "10.0.0.2:1234", 16, 7)
  assert cfg.has_explicit_cluster


def test_pinned_port_replaces_address_port():
  cfg = DistributedConfig(coordinator_address="10.0.0.2:8482",
                          coordinator_port=8476)
  assert cfg.resolved_address == "10.0.0.2:8476"
  cfg = DistributedConfig(coordinator_address="[fe80::1]", coordinator_port=8476)
  assert cfg.resolved_address == "[fe80::1]:8476"
  assert DistributedConfig(
      coordinator_address="[fe80::1]:99").resolved_address == "[fe80::1]:99"


def test_address_without_port_needs_coordinator_port():
  with pytest.raises(ValueError, match="has no port.*coordinator_port"):
    _ = DistributedConfig(coordinator_address="10.0.0.2").resolved_address


@pytest.mark.parametrize("section, message", [
    ({"num_processes": -1}, r"config\.distributed\.num_processes=-1"),
    ({"num_processes": 2, "process_id": 2}, r"process_id=2.*below num_processes=2"),
    ({"coordinator_port": 70000}, r"coordinator_port=70000"),
    ({"initialization_timeout_s": 0}, r"initialization_timeout_s=0"),
    ({"num_processes": "2"}, r"num_processes='2': expected an integer"),
    ({"coordinator_address": "fe80::1:80"}, r"IPv6 address must be in brackets"),
    ({"coordinator_address": "host:http"}, r"'http' is not a TCP port"),
    ({"auto": "yes"}, r"config\.distributed\.auto"),
    ({"coordinater_address": "x:1"}, r"unknown key\(s\) \['coordinater_address'\]"),
])
def test_bad_settings_name_the_key(clean_env, section, message):
  with pytest.raises(ValueError, match=message):
    DistributedConfig.from_config(section)


def test_bad_environment_value_names_the_variable(clean_env):
  clean_env.setenv("HEPH_NUM_PROCESSES", "two")
  with pytest.raises(ValueError, match="HEPH_NUM_PROCESSES='two'.*num_processes"):
    DistributedConfig.from_config(None)


def test_is_tpu_vm_respects_environment():
  assert distributed.is_tpu_vm({"HEPH_TPU_VM": "1"})
  assert not distributed.is_tpu_vm({"HEPH_TPU_VM": "0"})
  assert not distributed.is_tpu_vm({"JAX_PLATFORMS": "cpu"})


# --- initialize() decisions that need no peers ---------------------------------

def test_single_process_is_a_no_op(clean_env):
  clean_env.setenv("HEPH_TPU_VM", "0")
  distributed.initialize(distributed.default_config())
  distributed.initialize(None)  # Idempotent.
  assert not jax.distributed.is_initialized()


def test_multi_process_off_tpu_needs_all_three(clean_env):
  clean_env.setenv("HEPH_TPU_VM", "0")
  with pytest.raises(DistributedInitError,
                     match=r"missing config\.distributed\.\['coordinator_address'\]"):
    distributed.initialize({"num_processes": 2, "process_id": 0})


def test_bad_config_raises_distributed_init_error(clean_env):
  with pytest.raises(DistributedInitError, match="num_processes"):
    distributed.initialize({"num_processes": -3})


def test_initialize_after_devices_exist_says_call_it_first(clean_env):
  clean_env.setenv("HEPH_TPU_VM", "0")
  jax.devices()  # Creates the backend, as a careless caller would.
  with pytest.raises(DistributedInitError, match="call it first"):
    distributed.initialize({"coordinator_address": "localhost:1",
                            "num_processes": 2, "process_id": 1})
  assert not jax.distributed.is_initialized()


def test_coordinator_port_in_use_is_reported_before_jax_crashes(clean_env):
  clean_env.setenv("HEPH_TPU_VM", "0")
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
    busy.bind(("", 0))
    busy.listen()
    port = busy.getsockname()[1]
    with pytest.raises(DistributedInitError,
                       match=f"cannot serve the coordinator on port {port}"):
      distributed.initialize({"coordinator_address": f"localhost:{port}",
                              "num_processes": 2, "process_id": 0})
  assert not jax.distributed.is_initialized()


@pytest.mark.parametrize("override, message", [
    ("--config.distributed.num_processes=-3", "num_processes"),
    ("--config.distributed.process_id=5", "process_id"),
])
def test_train_cli_exits_2_for_a_distributed_config_mistake(override, message, repo_root, clean_env,
                                                           capsys):
  """A config.distributed mistake is a configuration error (2), not "peers never joined" (3)."""
  from heph_jax import train
  code = train.main(["--config", os.path.join(repo_root, "configs", "tiny.py"), "--workdir",
                     "/tmp/never-written", override])
  assert code == 2 != distributed.EXIT_CODE_INIT_TIMEOUT
  err = capsys.readouterr().err
  assert err.startswith("heph_jax.train: configuration error:") and message in err, err
  assert issubclass(distributed.DistributedConfigError, distributed.DistributedInitError)
