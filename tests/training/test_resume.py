"""Exact resume: a run killed with SIGKILL and restarted logs, for every step, the same loss as an
uninterrupted run (bitwise, CPU); SIGTERM writes a checkpoint and exits cleanly."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT, config_flags_for
from heph_jax.training.metrics import read_metrics

STEPS = 14


def _command(corpus, workdir, *extra):
  return [sys.executable, "-m", "heph_jax.train", "--config", str(REPO_ROOT / "configs" / "tiny.py"),
          "--workdir", str(workdir), *config_flags_for(corpus), "--config.log_every_steps=1",
          "--config.eval_every_steps=0", "--config.eval_batches=0", *extra]


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO_ROOT))
  env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  return env


def _losses(workdir):
  """step -> list of every loss logged for it (a resumed run logs re-run steps again)."""
  out = {}
  for record in read_metrics(workdir):
    if "loss" in record:
      out.setdefault(record["step"], []).append(record["loss"])
  return out


def _wait_for_step(proc, workdir, step, timeout=600):
  path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      raise AssertionError(f"training exited early with {proc.returncode}")
    if os.path.exists(path) and max(_losses(workdir) or [0]) >= step:
      return
    time.sleep(0.2)
  raise AssertionError(f"step {step} not reached in {timeout}s")


@pytest.fixture(scope="module")
def llama3_style_tokenizer(tmp_path_factory):
  """A Hugging Face tokenizer.json directory in the Llama-3 style (byte-level BPE), built here."""
  sys.path.insert(0, str(REPO_ROOT / "tests" / "fixtures" / "tokenizers"))
  import tokenizer_builders
  from heph_jax.data.tokenizers import load_tokenizer
  directory = tokenizer_builders.build_llama3_style(str(tmp_path_factory.mktemp("llama3_tok")),
                                                    vocab_size=1000)
  return directory, load_tokenizer("hf:" + directory).vocab_size


# The C++ CPU attention kernel splits work over threads differently from run to run; its results
# must not depend on that.
@pytest.mark.parametrize("tokenizer,attention", [("sp", "xla"), ("hf", "xla"), ("sp", "cpu")])
def test_sigkill_then_resume_is_bitwise_identical(tiny_corpus, tmp_path, tokenizer, attention, request):
  flags = [f"--config.num_train_steps={STEPS}", "--config.checkpoint_every_steps=4",
           f"--config.model.attention_impl={attention}"]
  if tokenizer == "hf":  # Llama-3's kind of tokenizer: resume must stay exact with it too
    directory, vocab = request.getfixturevalue("llama3_style_tokenizer")
    flags += [f"--config.data.tokenizer=hf:{directory}", f"--config.model.vocab_size={vocab}"]
  reference = tmp_path / "reference"
  subprocess.run(_command(tiny_corpus, reference, *flags), env=_env(), check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  want = _losses(reference)
  assert sorted(want) == list(range(1, STEPS + 1))

  killed = tmp_path / "killed"
  proc = subprocess.Popen(_command(tiny_corpus, killed, *flags), env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  _wait_for_step(proc, killed, 10)  # past the step-8 checkpoint, maybe mid-save of nothing
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert max(_losses(killed)) < STEPS
  subprocess.run(_command(tiny_corpus, killed, *flags), env=_env(), check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  got = _losses(killed)
  assert sorted(got) == list(range(1, STEPS + 1))
  for step, losses in got.items():
    # Re-run steps are logged twice; every value must equal the uninterrupted run's exactly.
    assert all(loss == want[step][0] for loss in losses), (step, losses, want[step])
  assert any(len(v) > 1 for v in got.values()), "the kill should have forced some steps to re-run"


def test_sigterm_writes_checkpoint_and_exits_cleanly(tiny_corpus, tmp_path):
  workdir = tmp_path / "preempted"
  flags = ["--config.num_train_steps=100000", "--config.checkpoint_every_steps=0"]
  proc = subprocess.Popen(_command(tiny_corpus, workdir, *flags), env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  _wait_for_step(proc, workdir, 3)
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, output
  saved = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
  assert len(saved) == 1 and saved[0] >= 3
  assert saved[0] == max(_losses(workdir)), "checkpoint is not at the last completed step"
  assert "SIGTERM" in output
  # The same command resumes from it.
  resumed = subprocess.run(
      _command(tiny_corpus, workdir, f"--config.num_train_steps={saved[0] + 2}",
               "--config.checkpoint_every_steps=0"),
      env=_env(), capture_output=True, text=True, check=True)
  assert "resumed from" in resumed.stdout and f"/{saved[0]}" in resumed.stdout
  assert max(_losses(workdir)) == saved[0] + 2
