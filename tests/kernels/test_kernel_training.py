"""Training with a kernel attention_impl (pallas, cpu) follows the same loss curve as with xla
(20 steps, tiny config)."""
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, config_flags_for
from heph_jax.training.metrics import read_metrics

STEPS = 20


def _train_losses(impl, corpus, workdir):
  # tiny.py's own 256-token rows: two 128-blocks per row, so block skipping and packing both matter.
  flags = [f for f in config_flags_for(corpus) if not f.startswith("--config.seq_len=")]
  command = [sys.executable, "-m", "heph_jax.train", "--config", "configs/tiny.py",
             "--workdir", str(workdir), f"--config.model.attention_impl={impl}",
             f"--config.num_train_steps={STEPS}", "--config.log_every_steps=1",
             "--config.seq_len=256", "--config.eval_batches=0", *flags]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
  result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, f"{impl} run failed:\n{result.stderr[-4000:]}"
  losses = {r["step"]: r["loss"] for r in read_metrics(workdir) if "loss" in r}
  assert sorted(losses) == list(range(1, STEPS + 1)), f"{impl}: logged steps {sorted(losses)}"
  return [losses[s] for s in range(1, STEPS + 1)]


@pytest.fixture(scope="module")
def xla_losses(tiny_corpus, tmp_path_factory):
  losses = _train_losses("xla", tiny_corpus, tmp_path_factory.mktemp("xla"))
  assert losses[-1] < losses[0], f"the xla run did not learn: {losses}"
  return losses


@pytest.mark.parametrize("impl", [pytest.param("pallas", marks=pytest.mark.slow), "cpu"])
def test_kernel_and_xla_give_the_same_losses(impl, xla_losses, tiny_corpus, tmp_path):
  kernel = _train_losses(impl, tiny_corpus, tmp_path / impl)
  worst = max(abs(a - b) for a, b in zip(xla_losses, kernel))
  assert worst <= 1e-3, f"losses differ by up to {worst:.2e}:\nxla    {xla_losses}\n{impl:6} {kernel}"
