"""Training with attention_impl=pallas follows the same loss curve as with xla (20 steps, tiny config)."""
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


@pytest.mark.slow
def test_pallas_and_xla_give_the_same_losses(tiny_corpus, tmp_path):
  xla = _train_losses("xla", tiny_corpus, tmp_path / "xla")
  pallas = _train_losses("pallas", tiny_corpus, tmp_path / "pallas")
  assert xla[-1] < xla[0], f"the xla run did not learn: {xla}"
  worst = max(abs(a - b) for a, b in zip(xla, pallas))
  assert worst <= 1e-3, f"losses differ by up to {worst:.2e}:\nxla    {xla}\npallas {pallas}"
