"""Multi-process JAX start-up: `jax.distributed.initialize` with clear failures.

Every process of a multi-host run (each TPU VM worker of a pod slice, or each
local process in a test) calls `initialize(...)` once, before anything touches
JAX devices. On a TPU VM JAX finds the coordinator, the process count and this
process's id by itself; elsewhere they come from the config or the environment.

Config keys (`config.distributed`, defaults in `default_config()`):

  coordinator_address       "" = none. "host:port" of process 0's coordinator
                            service, the same string on every process. Needed
                            off TPU VMs for more than one process.
  coordinator_port          0 = JAX's choice. When set, replaces the port in
                            coordinator_address, and the port JAX picks on a TPU
                            VM. JAX >= 0.8.1 moved its TPU default from 8476 to
                            8482, which some pod firewalls block (jax#35905):
                            pin 8476 there.
  num_processes             0 = auto (JAX on a TPU VM, else 1).
  process_id                -1 = auto (JAX on a TPU VM, else 0). 0..N-1, unique.
  initialization_timeout_s  300. Seconds to wait for every peer to join. A peer
                            that never comes makes the process print a
                            `DistributedInitError` message and exit with status
                            `EXIT_CODE_INIT_TIMEOUT` instead of hanging.
  auto                      True: on a TPU VM with nothing given explicitly, let
                            JAX detect the whole cluster. False: no detection;
                            without explicit values jax.distributed is not
                            started (a single-host run).
  cpu_collectives           "gloo": JAX's CPU cross-process collectives, set
                            before init for multi-process runs off TPU (the
                            simulated pod on one machine). "" leaves JAX's
                            setting alone.

Environment variables override the config (handy for launchers that start one
identical command per process):

  HEPH_COORDINATOR_ADDRESS  -> coordinator_address
  HEPH_COORDINATOR_PORT     -> coordinator_port
  HEPH_NUM_PROCESSES        -> num_processes
  HEPH_PROCESS_ID           -> process_id
  HEPH_TPU_VM               "1"/"0" forces `is_tpu_vm()` (tests, odd images).

Example: two processes on one machine, a simulated 8-device pod:

  XLA_FLAGS=--xla_force_host_platform_device_count=4 \\
  HEPH_COORDINATOR_ADDRESS=localhost:12345 HEPH_NUM_PROCESSES=2 \\
  HEPH_PROCESS_ID=0 python -m heph_jax.train --config configs/tiny.py ...
  (and the same with HEPH_PROCESS_ID=1)
"""
from __future__ import annotations

import dataclasses
import errno
import glob
import logging
import os
import socket
import sys
import threading
from collections.abc import Mapping
from typing import Any

import ml_collections
from heph_jax.errors import ConfigError, HephError

logger = logging.getLogger(__name__)

# Exit status of a process whose peers never joined within the timeout.
EXIT_CODE_INIT_TIMEOUT = 3

# Extra time JAX's own timeout gets beyond ours, so that our clear message (not
# JAX's C++ abort, which kills the process with SIGABRT) reports the failure.
_JAX_TIMEOUT_GRACE_S = 30

_ENV_KEYS = {
    "coordinator_address": "HEPH_COORDINATOR_ADDRESS",
    "coordinator_port": "HEPH_COORDINATOR_PORT",
    "num_processes": "HEPH_NUM_PROCESSES",
    "process_id": "HEPH_PROCESS_ID",
}

# PCI ids of TPU chips (vendor Google). Google's gVNIC network card shares the
# vendor id, so the device id must match too.
_GOOGLE_PCI_VENDOR = "0x1ae0"
_TPU_PCI_DEVICES = frozenset(
    {"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"})


class DistributedInitError(HephError, RuntimeError):
  """Raised (or printed before exit) when the processes cannot form one system."""
  exit_code = EXIT_CODE_INIT_TIMEOUT  # not 2: the config was fine, the peers or network were not


class DistributedConfigError(ConfigError, DistributedInitError):
  """A `config.distributed` value is wrong: a configuration error (exit 2), not a network one."""
  exit_code = 2


def default_config() -> ml_collections.ConfigDict:
  """Defaults of the `config.distributed` section (see the module docstring)."""
  return ml_collections.ConfigDict({
      "coordinator_address": "",
      "coordinator_port": 0,
      "num_processes": 0,
      "process_id": -1,
      "initialization_timeout_s": 300,
      "auto": True,
      "cpu_collectives": "gloo",
  })


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """Resolved, validated `config.distributed` (environment overrides applied)."""
  coordinator_address: str = ""
  coordinator_port: int = 0
  num_processes: int = 0
  process_id: int = -1
  initialization_timeout_s: int = 300
  auto: bool = True
  cpu_collectives: str = "gloo"

  @classmethod
  def from_config(cls, section: Any = None,
                  environ: Mapping[str, str] | None = None) -> DistributedConfig:
    """Builds from a `config.distributed` ConfigDict (or dict, or None)."""
    environ = os.environ if environ is None else environ
    values = dataclasses.asdict(cls())
    if section is not None:
      given = section.to_dict() if hasattr(section, "to_dict") else dict(section)
      unknown = sorted(set(given) - set(values))
      if unknown:
        raise DistributedConfigError(
            f"config.distributed has unknown key(s) {unknown}; "
            f"expected some of {sorted(values)}")
      values.update(given)
    for key, env_name in _ENV_KEYS.items():
      raw = environ.get(env_name, "").strip()
      if not raw:
        continue
      if key == "coordinator_address":
        values[key] = raw
      else:
        try:
          values[key] = int(raw)
        except ValueError:
          raise DistributedConfigError(
              f"environment variable {env_name}={raw!r} is not an integer "
              f"(it overrides config.distributed.{key})") from None
    config = cls(**values)
    config.validate()
    return config

  def validate(self) -> None:
    """Checks types and ranges; errors name the config key."""
    def fail(key, expected):
      raise DistributedConfigError(f"config.distributed.{key}={getattr(self, key)!r}: "
                       f"expected {expected}")
    for key in ("coordinator_port", "num_processes", "process_id",
                "initialization_timeout_s"):
      value = getattr(self, key)
      if isinstance(value, bool) or not isinstance(value, int):
        fail(key, "an integer")
    if not isinstance(self.coordinator_address, str):
      fail("coordinator_address", 'a "host:port" string')
    if not isinstance(self.auto, bool):
      fail("auto", "True or False")
    if not isinstance(self.cpu_collectives, str):
      fail("cpu_collectives", 'a string such as "gloo" (or "" to leave as is)')
    if not 0 <= self.coordinator_port <= 65535:
      fail("coordinator_port", "0 (JAX's default) or a TCP port 1..65535")
    if self.num_processes < 0:
      fail("num_processes", "0 (auto) or a positive process count")
    if self.process_id < -1:
      fail("process_id", "-1 (auto) or a process index >= 0")
    if self.num_processes and self.process_id >= self.num_processes:
      fail("process_id",
           f"an index below num_processes={self.num_processes} (0..N-1)")
    if self.initialization_timeout_s <= 0:
      fail("initialization_timeout_s", "a positive number of seconds")
    if self.coordinator_address:
      split_host_port(self.coordinator_address)  # Raises on a malformed one.

  @property
  def resolved_address(self) -> str:
    """coordinator_address with coordinator_port applied ("" when unset)."""
    if not self.coordinator_address:
      return ""
    host, port = split_host_port(self.coordinator_address)
    port = self.coordinator_port or port
    if port is None:
      raise DistributedConfigError(
          f"config.distributed.coordinator_address={self.coordinator_address!r}"
          " has no port: write it as host:port or set "
          "config.distributed.coordinator_port")
    return f"{host}:{port}"

  @property
  def has_explicit_cluster(self) -> bool:
    return (bool(self.coordinator_address) or self.num_processes > 1
            or self.process_id > 0)


def split_host_port(address: str) -> tuple[str, int | None]:
  """'h:1', '[::1]:1', 'h', '[::1]' -> (host, port or None)."""
  def bad(why):
    return ValueError(f"config.distributed.coordinator_address={address!r}: "
                      f"{why}; expected host:port, e.g. 10.0.0.2:8476")
  if address.startswith("["):  # Bracketed IPv6.
    host, sep, rest = address.partition("]")
    host += "]"
    if not sep or (rest and not rest.startswith(":")):
      raise bad("malformed [IPv6] address")
    port_text = rest[1:] if rest else ""
  elif address.count(":") == 1:
    host, port_text = address.split(":")
  elif ":" in address:
    raise bad("an IPv6 address must be in brackets, e.g. [fe80::1]:8476")
  else:
    host, port_text = address, ""
  if not host.strip("[]"):
    raise bad("empty host")
  if not port_text:
    return host, None
  if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
    raise bad(f"port {port_text!r} is not a TCP port 1..65535")
  return host, int(port_text)


def quiet_libtpu_off_tpu() -> None:
  """Off a TPU VM, tells libtpu (installed by the test extra) not to probe for a pod: it would ask
  the GCE metadata server and wait on worker hostnames. CLIs call it before JAX starts."""
  if not is_tpu_vm():
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")


def is_tpu_vm(environ: Mapping[str, str] | None = None) -> bool:
  """True on a Cloud TPU VM; never imports libtpu or asks the metadata server.

  HEPH_TPU_VM=1/0 forces the answer; JAX_PLATFORMS without "tpu" means no.
  Otherwise: TPU device nodes (/dev/accel*, v4/v5e) or a TPU chip on the PCI
  bus (v5p/v6e attach through vfio, which alone proves nothing).
  """
  environ = os.environ if environ is None else environ
  forced = environ.get("HEPH_TPU_VM", "").strip().lower()
  if forced:
    return forced in ("1", "true", "yes")
  platforms = environ.get("JAX_PLATFORMS", "").strip().lower()
  if platforms and "tpu" not in platforms.split(","):
    return False
  if glob.glob("/dev/accel[0-9]*"):
    return True
  return _has_tpu_pci_device()


def _has_tpu_pci_device() -> bool:
  for vendor_path in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(vendor_path) as f:
        if f.read().strip() != _GOOGLE_PCI_VENDOR:
          continue
      with open(os.path.join(os.path.dirname(vendor_path), "device")) as f:
        if f.read().strip() in _TPU_PCI_DEVICES:
          return True
    except OSError:
      continue
  return False


def process_index() -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index()


def process_count() -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_count()


def is_primary() -> bool:
  """True on process 0, the one that logs, writes summaries and exports."""
  return process_index() == 0


def initialize(dist_cfg: Any = None) -> None:
  """Joins this process to the multi-process JAX system, or does nothing.

  `dist_cfg`: a DistributedConfig, a `config.distributed` ConfigDict/dict, or
  None (defaults + environment). Idempotent. A single process without a
  coordinator is a no-op. Call it before any JAX call that touches devices.

  Raises DistributedConfigError (a ConfigError) for bad settings, DistributedInitError for JAX errors; a peer that does
  not join within initialization_timeout_s ends the process (see module doc).
  """
  import jax  # pylint: disable=g-import-not-at-top

  if isinstance(dist_cfg, DistributedConfig):
    cfg = dist_cfg
  else:
    cfg = DistributedConfig.from_config(dist_cfg)

  if jax.distributed.is_initialized():
    logger.info("jax.distributed already initialized; leaving it as is")
    return

  on_tpu = is_tpu_vm()
  if cfg.has_explicit_cluster:
    kwargs = _explicit_kwargs(cfg, on_tpu)
  elif cfg.auto and on_tpu:
    kwargs = {}  # JAX reads everything from the TPU VM's metadata.
  else:
    logger.info("single process: no coordinator, jax.distributed not started")
    return

  if kwargs.get("process_id") == 0 and "coordinator_address" in kwargs:
    _check_port_free(kwargs["coordinator_address"])
  if _backends_are_initialized():
    raise DistributedInitError(
        "heph_jax.parallel.distributed.initialize() was called after JAX "
        "already created its devices (e.g. by jax.devices() or a jitted call); "
        "call it first thing in main(), before any other JAX call.")

  if not on_tpu and cfg.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation",
                      cfg.cpu_collectives)
  if cfg.coordinator_port and "coordinator_address" not in kwargs:
    # JAX's TPU auto-detection reads its port from here.
    os.environ["JAX_COORDINATOR_PORT"] = str(cfg.coordinator_port)

  timeout_s = cfg.initialization_timeout_s
  describe = _describe(cfg, kwargs, on_tpu)
  logger.info("jax.distributed.initialize: %s, timeout %d s", describe,
              timeout_s)
  done = threading.Event()
  watchdog = threading.Thread(
      target=_exit_if_not_done, args=(done, timeout_s, describe),
      name="heph-distributed-init-watchdog", daemon=True)
  watchdog.start()
  try:
    jax.distributed.initialize(
        initialization_timeout=timeout_s + _JAX_TIMEOUT_GRACE_S, **kwargs)
  except Exception as e:  # JAX raises several types; all mean the same here.
    raise DistributedInitError(
        f"jax.distributed.initialize failed ({describe}, timeout "
        f"{timeout_s} s): {type(e).__name__}: {e}\n{_advice()}") from e
  finally:
    done.set()
  logger.info("jax.distributed ready: %s", describe)


def _check_port_free(address: str) -> None:
  """Process 0 binds the coordinator port; JAX crashes (SIGSEGV) if it is taken."""
  port = split_host_port(address)[1]
  for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "")):
    try:
      with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
      return
    except OSError as e:
      if e.errno == errno.EADDRINUSE:
        raise DistributedInitError(
            f"process 0 cannot serve the coordinator on port {port} "
            f"(coordinator {address}): the port is in use. Another run may "
            "still hold it (tpu/stop.sh ends one); or choose a free port with "
            "config.distributed.coordinator_port.") from None
      # Anything else (say, no IPv6 here): try the next family, else let JAX.


def _backends_are_initialized() -> bool:
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):  # Private API moved: JAX checks too.
    return False


def _explicit_kwargs(cfg: DistributedConfig, on_tpu: bool) -> dict[str, Any]:
  """jax.distributed.initialize arguments from explicit settings."""
  kwargs = {}
  if cfg.coordinator_address:
    kwargs["coordinator_address"] = cfg.resolved_address
  if cfg.num_processes:
    kwargs["num_processes"] = cfg.num_processes
  if cfg.process_id >= 0:
    kwargs["process_id"] = cfg.process_id
  missing = [key for key in ("coordinator_address", "num_processes",
                             "process_id") if key not in kwargs]
  if not missing:
    # Everything is given: keep JAX's cluster detection (Slurm, MPI, ...) out.
    kwargs["cluster_detection_method"] = "deactivate"
  elif not (on_tpu and cfg.auto):
    env = ", ".join(f"{_ENV_KEYS[key]}" for key in missing)
    raise DistributedConfigError(
        "a multi-process run off a TPU VM needs coordinator_address, "
        f"num_processes and process_id; missing config.distributed.{missing} "
        f"(or environment {env}). Each process gets the same address and "
        "count and its own id 0..N-1.")
  return kwargs


def _describe(cfg: DistributedConfig, kwargs: Mapping[str, Any],
              on_tpu: bool) -> str:
  address = kwargs.get("coordinator_address")
  if address is None:
    port = cfg.coordinator_port or "JAX's default port"
    address = f"auto-detected TPU worker 0 (port {port})"
  process_id = kwargs.get("process_id", "auto")
  count = kwargs.get("num_processes", "auto")
  where = "a TPU VM" if on_tpu else "a non-TPU host"
  return f"coordinator {address}, process {process_id} of {count} on {where}"


def _advice() -> str:
  return (
      "Check that: every worker runs the same command (on a TPU pod start it "
      "on all workers at once, e.g. tpu/launch.sh, i.e. --worker=all); every "
      "process has the same coordinator address and process count and its own "
      "process id 0..N-1; the coordinator port is open between hosts (JAX's "
      "TPU default moved to 8482 in JAX 0.8.1 and is firewalled on some pods: "
      "pin it with --config.distributed.coordinator_port=8476); no http(s)_proxy "
      "variables divert the connection.")


def _exit_if_not_done(done: threading.Event, timeout_s: int,
                      describe: str) -> None:
  """Turns a hang (or JAX's later SIGABRT) into a clear message and exit."""
  if done.wait(timeout_s):
    return
  message = (
      f"\n{DistributedInitError.__name__}: the processes did not all join "
      f"within {timeout_s} s (config.distributed.initialization_timeout_s); "
      f"{describe}. A peer never started, crashed, or cannot reach the "
      f"coordinator.\n{_advice()}\n")
  sys.stderr.write(message)
  sys.stderr.flush()
  logging.shutdown()
  os._exit(EXIT_CODE_INIT_TIMEOUT)  # The main thread is stuck inside JAX's C++.
