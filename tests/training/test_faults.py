"""Faults a long run meets: a non-finite loss never reaches the weights or a checkpoint."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_test_config
from heph_jax.model import ModelConfig, llama
from heph_jax.train import train_and_evaluate
from heph_jax.training import checkpoint, guard
from heph_jax.training.metrics import read_metrics
from heph_jax.training.step import make_train_step

TINY = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                   num_attention_heads=2, num_key_value_heads=1)


def _batch(rng, weight=1.0):
  tokens = rng.integers(0, TINY.vocab_size, (2, 16)).astype(np.int32)
  weights = np.ones((2, 16), np.float32)
  weights[0, 5] = weight
  return {"tokens": tokens, "segment_ids": np.ones((2, 16), np.int32),
          "positions": np.tile(np.arange(16, dtype=np.int32), (2, 1)), "loss_weights": weights}


def test_a_non_finite_batch_applies_no_update():
  tx = optax.adamw(1e-2)
  params = llama.init(TINY, jax.random.PRNGKey(0))
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}
  step = jax.jit(make_train_step(TINY, tx, grad_accum_steps=1))
  rng = np.random.default_rng(0)
  before = jax.device_get(state)
  bad, metrics = step(state, _batch(rng, weight=np.inf))  # an infinite loss weight: loss inf
  assert not math.isfinite(float(metrics["loss"]))
  after = jax.device_get(bad)
  for a, b in zip(jax.tree.leaves(before["params"]) + jax.tree.leaves(before["opt_state"]),
                  jax.tree.leaves(after["params"]) + jax.tree.leaves(after["opt_state"])):
    np.testing.assert_array_equal(a, b)  # bitwise: neither weights nor Adam moments moved
  good, metrics = step(bad, _batch(rng))
  assert math.isfinite(float(metrics["loss"]))
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after["params"]),
                                                       jax.tree.leaves(jax.device_get(good["params"]))))


def test_guard_skips_up_to_the_limit_then_names_the_step():
  said = []
  g = guard.NonFiniteGuard(allowed_skips=1, say=said.append)
  g.check(3, {"loss": 1.5, "grad_norm": 2.0}, "code 100%")
  g.check(4, {"loss": float("nan"), "grad_norm": 1.0}, "code 50%, text 50%")
  assert len(said) == 1 and "step 4" in said[0] and "code 50%, text 50%" in said[0]
  with pytest.raises(guard.NonFiniteError, match=r"step 9: loss 1.0, grad norm inf.*skip_nonfinite_steps=1"):
    g.check(9, {"loss": 1.0, "grad_norm": float("inf")}, "text 100%")
  assert guard.NonFiniteError.exit_code == guard.EXIT_NONFINITE != 2
  assert guard.task_mix(np.array([[0, 0, 1, -1]]), ["a", "b"]) == "a 67%, b 33%"


def test_diverging_run_stops_at_the_first_non_finite_step_and_keeps_good_checkpoints(
    tiny_corpus, tmp_path):
  config = tiny_test_config(tiny_corpus, **{
      "num_train_steps": 40, "log_every_steps": 1, "checkpoint_every_steps": 1,
      "keep_checkpoints": 2, "eval_every_steps": 0, "optimizer.learning_rate": 1e30,
      "optimizer.warmup_steps": 0, "async_checkpointing": False})
  workdir = str(tmp_path / "run")
  with pytest.raises(guard.NonFiniteError) as raised:
    train_and_evaluate(config, workdir)
  logged = {r["step"]: (r["loss"], r["grad_norm"]) for r in read_metrics(workdir) if "loss" in r}
  finite = {s: math.isfinite(loss) and math.isfinite(norm) for s, (loss, norm) in logged.items()}
  first_bad = min(s for s, ok in finite.items() if not ok)
  assert all(finite[s] for s in range(1, first_bad)) and max(logged) == first_bad
  assert f"step {first_bad}:" in str(raised.value) and "task mix" in str(raised.value)
  _, _, params, step = checkpoint.restore_params(workdir)
  assert step == first_bad - 1  # the bad step was never saved; the good ones were kept
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_skip_mode_runs_through_bad_steps(tiny_corpus, tmp_path, capsys):
  config = tiny_test_config(tiny_corpus, **{
      "num_train_steps": 6, "log_every_steps": 1, "eval_every_steps": 0,
      "optimizer.learning_rate": 1e30, "optimizer.warmup_steps": 0,
      "skip_nonfinite_steps": 100})
  result = train_and_evaluate(config, str(tmp_path / "run"))
  assert result["step"] == 6
  assert "skipped step" in capsys.readouterr().out
  _, _, params, _ = checkpoint.restore_params(str(tmp_path / "run"))
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


# ---- a damaged newest checkpoint ------------------------------------------------------------
def _run(corpus, workdir, steps):
  config = tiny_test_config(corpus, **{
      "num_train_steps": steps, "log_every_steps": 1, "checkpoint_every_steps": 2,
      "keep_checkpoints": 5, "eval_every_steps": 0, "async_checkpointing": False})
  return train_and_evaluate(config, str(workdir))


def _losses(workdir):
  return {r["step"]: r["loss"] for r in read_metrics(str(workdir)) if "loss" in r}


@pytest.fixture(scope="module")
def uninterrupted(tiny_corpus, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  _run(tiny_corpus, workdir, 8)
  return _losses(workdir)


def _truncate_an_array_file(step_dir):
  files = sorted((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  biggest = files[-1]
  biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
  return biggest.name


def _delete_an_item(step_dir):
  import shutil
  shutil.rmtree(step_dir / "data")
  return "data"


def _garble_the_config(step_dir):
  files = [p for p in (step_dir / "config").rglob("*") if p.is_file()]
  for path in files:
    path.write_text('{"seed": 0, "model": ')  # cut short, as after a storage fault
  return "config"


@pytest.mark.parametrize("damage", [_truncate_an_array_file, _delete_an_item, _garble_the_config])
def test_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_previous(
    damage, tiny_corpus, tmp_path, uninterrupted, capsys):
  workdir = tmp_path / "run"
  _run(tiny_corpus, workdir, 6)  # checkpoints at steps 2, 4, 6
  damage(workdir / "checkpoints" / "6")
  capsys.readouterr()
  result = _run(tiny_corpus, workdir, 8)
  out = capsys.readouterr().out
  assert result["step"] == 8
  assert "checkpoint step 6 does not restore" in out and f"resumed from {workdir}/checkpoints/4" in out
  aside = workdir / "checkpoints" / "corrupt"
  assert (aside / "6-0").is_dir() and (aside / "6-0.reason.txt").read_text().strip()  # never deleted
  resumed = _losses(workdir)
  for step in (5, 6, 7, 8):  # re-run from step 4: the same losses as a run never interrupted
    assert resumed[step] == uninterrupted[step], step


def test_no_restorable_checkpoint_names_every_step_tried(tiny_corpus, tmp_path):
  workdir = tmp_path / "run"
  _run(tiny_corpus, workdir, 4)  # steps 2 and 4
  for step in ("2", "4"):
    _garble_the_config(workdir / "checkpoints" / step)
  with pytest.raises(checkpoint.CheckpointError, match=r"step 4: .*; step 2: "):
    _run(tiny_corpus, workdir, 6)


def test_a_failing_write_at_save_names_the_path_and_keeps_earlier_steps(tiny_corpus, tmp_path,
                                                                        monkeypatch):
  """A disk that fills up (ENOSPC) while step 4 is written: a clear error, step 2 restorable, step 4
  not taken as complete. (Injected at the data item's write: as root, chmod cannot make a
  directory unwritable.)"""
  import errno
  workdir = tmp_path / "run"
  _run(tiny_corpus, workdir, 2)
  real_save = checkpoint.DataIteratorHandler.save

  def full_disk(self, directory, args):
    real_save(self, directory, args)
    raise OSError(errno.ENOSPC, "No space left on device", str(directory / "packer.npz"))

  monkeypatch.setattr(checkpoint.DataIteratorHandler, "save", full_disk)
  with pytest.raises(checkpoint.CheckpointError,
                     match=r"cannot write checkpoint step 4 under .*checkpoints: No space left on "
                           r"device \(.*packer.npz\); the earlier steps \[2\] are intact"):
    _run(tiny_corpus, workdir, 4)
  monkeypatch.undo()
  _, _, params, step = checkpoint.restore_params(str(workdir))
  assert step == 2 and all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
  assert _run(tiny_corpus, workdir, 4)["step"] == 4  # resumes from step 2, writes step 4 again
