"""A simulated 2-host pod: 2 processes x 4 CPU devices train, get SIGKILLed, resume, and match one
8-device process loss for loss.

Checks the multi-host path end to end: jax.distributed start-up, global batches from process-local
data, Orbax checkpoints written and restored by every process, metrics from process 0 only, and a
data stream that does not depend on the process count (data.process_sharding="rows").
"""
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO_ROOT
from heph_jax.training.metrics import read_metrics

STEPS, CHECKPOINT_AT = 20, 10
TIMEOUT_S = 420


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _overrides(corpus, cache_dir) -> dict:
  """configs/tiny.py shrunk for the test (flag name below `config.` -> value)."""
  values = {"num_train_steps": STEPS, "checkpoint_every_steps": CHECKPOINT_AT, "log_every_steps": 1,
            "eval_batches": 0, "seq_len": 128, "model.vocab_size": 512, "data.shuffle_buffer": 64,
            "data.tokenizer": corpus["tokenizer"], "data.cache_dir": str(cache_dir),
            "data.process_sharding": "rows"}  # losses independent of the process count
  values.update({f"data.sources.{t}": p for t, p in corpus["sources"].items()})
  return values


def _flags(overrides):
  return ([f"--config={REPO_ROOT / 'configs' / 'tiny.py'}"] +
          [f"--config.{k}={v}" for k, v in overrides.items()])


def _train_here(overrides, workdir):
  """The 1-process run, in this pytest process (conftest gives it 8 CPU devices)."""
  import jax
  from heph_jax.config import load_config_file
  from heph_jax.train import train_and_evaluate
  assert jax.device_count() == 8, "tests/conftest.py should give 8 CPU devices"
  config = load_config_file(str(REPO_ROOT / "configs" / "tiny.py"))
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return train_and_evaluate(config, str(workdir))


def _launch(flags, workdir, log_path, devices, process_id=None, num_processes=1, port=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  for key in ("HEPH_COORDINATOR_ADDRESS", "HEPH_NUM_PROCESSES", "HEPH_PROCESS_ID"):
    env.pop(key, None)
  cmd = [sys.executable, "-m", "heph_jax.train", *flags, f"--workdir={workdir}"]
  if num_processes > 1:
    cmd += [f"--coordinator_address=localhost:{port}", f"--num_processes={num_processes}",
            f"--process_id={process_id}"]
  with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait(procs, logs):
  deadline = time.monotonic() + TIMEOUT_S
  for proc in procs:
    try:
      proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      pytest.fail("training timed out:\n" + _tails(logs))
  if any(p.returncode for p in procs):
    pytest.fail(f"exit codes {[p.returncode for p in procs]}:\n" + _tails(logs))


def _tails(logs):
  return "\n".join(f"--- {path}\n" + open(path).read()[-3000:] for path in logs)


def _losses(workdir):
  """step -> loss from metrics.jsonl; the last record of a step wins (a resumed run logs again the
  steps after its checkpoint)."""
  return {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}


def _committed(workdir, step):
  return os.path.isdir(os.path.join(workdir, "checkpoints", str(step)))


def test_two_processes_killed_and_resumed_match_one_process(tiny_corpus, tmp_path):
  overrides = _overrides(tiny_corpus, tmp_path / "cache")
  flags = _flags(overrides)

  # Reference: one process, 8 devices, uninterrupted. (It also prepares the shared data cache.)
  ref_dir = tmp_path / "one"
  assert _train_here(overrides, ref_dir)["step"] == STEPS
  expected = _losses(ref_dir)
  assert sorted(expected) == list(range(1, STEPS + 1))

  # Two processes x 4 devices; SIGKILL both once the step-10 checkpoint is committed.
  work = tmp_path / "two"
  port = _free_port()
  logs = [tmp_path / f"two_{i}.log" for i in range(2)]
  procs = [_launch(flags, work, logs[i], 4, i, 2, port) for i in range(2)]
  deadline = time.monotonic() + TIMEOUT_S
  while not _committed(work, CHECKPOINT_AT):
    if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
      for p in procs:
        p.kill()
      pytest.fail("the 2-process run ended or hung before its first checkpoint:\n" + _tails(logs))
    time.sleep(0.05)
  for p in procs:
    p.send_signal(signal.SIGKILL)
  for p in procs:
    p.wait()
  assert not _committed(work, STEPS), "the first launch finished before it was killed"
  killed_at = max(_losses(work))
  assert CHECKPOINT_AT <= killed_at < STEPS

  # Relaunch the same command: both processes restore state and data iterator, and finish.
  port = _free_port()
  resume_logs = [tmp_path / f"resume_{i}.log" for i in range(2)]
  procs = [_launch(flags, work, resume_logs[i], 4, i, 2, port) for i in range(2)]
  _wait(procs, resume_logs)
  assert "resumed from" in open(resume_logs[0]).read()

  got = _losses(work)
  assert sorted(got) == list(range(1, STEPS + 1))
  steps = range(1, STEPS + 1)
  np.testing.assert_allclose([got[s] for s in steps], [expected[s] for s in steps], rtol=1e-5, atol=0)
  # Only process 0 writes metrics: one record per logged step per launch, never two per launch.
  records = [r["step"] for r in read_metrics(work) if "loss" in r]
  assert len(records) == killed_at + (STEPS - CHECKPOINT_AT)
