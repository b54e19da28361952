"""The mixing CLI: fit on a synthetic runs.jsonl, and the sweep runner with an injected trainer."""
import copy
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from heph_jax.data.pipeline import rates as rates_lib
from heph_jax.mixing import sweep as sweep_lib
from heph_jax.mixing.__main__ import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = {"agent": ["tool_doc", "trajectory"], "code": ["code"], "text": ["text"]}


def true_losses(agent, steps):
  """Known per-domain laws along the agent axis, plus a step term that fades with training."""
  decay = 3.0 / np.sqrt(steps)
  return {
      "agent": 2.0 + 0.6 * np.exp(-4.0 * agent) + decay,
      "code": 1.6 + 0.5 * np.exp(3.0 * agent) * 0.2 + decay,
      "text": 2.4 + 0.3 * np.exp(2.5 * agent) * 0.2 + decay,
  }


def true_mean_optimum():
  grid = np.linspace(0.0, 1.0, 100001)
  losses = true_losses(grid, np.inf)
  return grid[np.argmin((losses["agent"] + losses["code"] + losses["text"]) / 3)]


def write_runs(path, agents, noise=0.002, seed=0, nan_at=None):
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    for i, a in enumerate(agents):
      losses = {d: float(v + rng.normal(0, noise)) for d, v in true_losses(a, np.inf).items()}
      if i == nan_at:
        losses["agent"] = float("nan")
      f.write(json.dumps({"mixture": {"agent": a, "code": (1 - a) / 2, "text": (1 - a) / 2},
                          "eval_loss": losses, "steps": 100, "params": 1000}) + "\n")


def test_fit_cli_writes_rates_and_plot(tmp_path, capsys):
  runs, out, png = tmp_path / "runs.jsonl", tmp_path / "rates.json", tmp_path / "fit.png"
  write_runs(runs, np.linspace(0.1, 0.7, 7))
  code = main(["fit", "--runs", str(runs), "--output", str(out), "--plot", str(png),
               "--bootstrap", "40"])
  assert code == 0
  report = json.loads(out.read_text())
  assert set(report) >= {"rates", "task_rates", "law", "params", "fit", "optimum_ci"}
  assert report["law"] == "exponential"
  assert abs(report["rates"]["agent"] - true_mean_optimum()) < 0.02
  assert report["rates"]["code"] == pytest.approx(report["rates"]["text"], abs=1e-6)
  assert sum(report["rates"].values()) == pytest.approx(1.0, abs=1e-9)
  lo, hi = report["optimum_ci"]["rates"]["agent"]
  assert lo <= report["rates"]["agent"] <= hi
  for quality in report["fit"].values():
    assert quality["r2"] > 0.99 and quality["loo_rmse"] is not None
  # The training pipeline's reader accepts the file, and the task rates follow the domains.
  data = rates_lib.read_rates_file(str(out))
  assert data["task_rates"]["tool_doc"] == pytest.approx(report["rates"]["agent"] / 2)
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "optimum" in capsys.readouterr().out


def test_fit_cli_with_constraints_and_single_objective(tmp_path):
  runs, out = tmp_path / "runs.jsonl", tmp_path / "rates.json"
  write_runs(runs, np.linspace(0.1, 0.7, 7))
  # The agent loss alone falls monotonically with more agent data: the bound decides.
  assert main(["fit", "--runs", str(runs), "--output", str(out), "--objective", "agent",
               "--max", "agent=0.6", "--bootstrap", "0"]) == 0
  report = json.loads(out.read_text())
  assert report["rates"]["agent"] == pytest.approx(0.6, abs=1e-6)
  assert report["active_constraints"] == ["agent at its maximum 0.6"]


def test_fit_cli_reports_bad_input_clearly(tmp_path, capsys):
  runs, out = tmp_path / "runs.jsonl", tmp_path / "rates.json"
  write_runs(runs, np.linspace(0.1, 0.7, 7), nan_at=4)
  assert main(["fit", "--runs", str(runs), "--output", str(out)]) == 2
  err = capsys.readouterr().err
  assert f"{runs}:5: eval_loss['agent'] is nan" in err
  assert not out.exists()
  write_runs(runs, [0.2, 0.4])
  assert main(["fit", "--runs", str(runs), "--output", str(out)]) == 2
  assert "2 distinct point(s) but law 'exponential' has 3 parameters" in capsys.readouterr().err


def test_fit_module_entry_point(tmp_path):
  runs, out = tmp_path / "runs.jsonl", tmp_path / "rates.json"
  write_runs(runs, np.linspace(0.1, 0.7, 7))
  proc = subprocess.run([sys.executable, "-m", "heph_jax.mixing", "fit", "--runs", str(runs),
                         "--output", str(out), "--bootstrap", "0"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert json.loads(out.read_text())["rates"]


# ---------------------------------------------------------------- sweep with an injected trainer


def fake_base_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_train_steps = 1000
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 200
  config.log_every_steps = 10
  config.optimizer = ml_collections.ConfigDict({"warmup_steps": 100, "learning_rate": 1e-3})
  config.data = ml_collections.ConfigDict({
      "domains": ml_collections.ConfigDict(TASKS),
      "rates": ml_collections.ConfigDict({"tool_doc": 0.25, "trajectory": 0.25, "code": 0.25,
                                          "text": 0.25}),
      "rates_file": "",
      "cache_dir": "",
  })
  return config


class FakeTrainer:
  """Plays train_and_evaluate: losses from true_losses, metrics.jsonl, resume = return early."""

  def __init__(self, fail_after=None):
    self.calls, self.configs, self.fail_after = [], [], fail_after

  def __call__(self, config, workdir):
    if self.fail_after is not None and len(self.calls) == self.fail_after:
      raise KeyboardInterrupt("simulated kill")
    self.calls.append(workdir)
    self.configs.append(copy.deepcopy(config))
    rates = config.data.rates
    agent = rates.tool_doc + rates.trajectory
    os.makedirs(workdir, exist_ok=True)
    steps = config.num_train_steps
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
      for step in range(config.eval_every_steps, steps + 1, config.eval_every_steps):
        losses = true_losses(agent, step)
        f.write(json.dumps({"step": step, "loss": 3.0}) + "\n")
        f.write(json.dumps({"step": step, "eval_loss/tool_doc": losses["agent"] + 0.1,
                            "eval_loss/trajectory": losses["agent"] - 0.1,
                            "eval_loss/code": losses["code"],
                            "eval_loss/text": losses["text"]}) + "\n")
    final = true_losses(agent, steps)
    return {"step": steps, "params": 12345,
            "eval_loss": {"tool_doc": final["agent"] + 0.1, "trajectory": final["agent"] - 0.1,
                          "code": final["code"], "text": final["text"]}}


def sweep_config(agents=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)):
  config = ml_collections.ConfigDict()
  config.base_config = os.path.join(REPO, "configs", "mixing_sweep.py")  # any existing file
  config.overrides = ml_collections.ConfigDict({"log_every_steps": 5,
                                                "optimizer": {"learning_rate": 3e-3}})
  config.steps = 40
  config.num_evals = 4
  config.mixtures = [{"agent": a, "code": (1 - a) / 2, "text": (1 - a) / 2} for a in agents]
  config.domains = None
  config.within = None
  return config


def test_sweep_records_runs_and_resumes(tmp_path):
  workdir = str(tmp_path / "sweep")
  trainer = FakeTrainer(fail_after=3)
  with pytest.raises(KeyboardInterrupt):
    sweep_lib.run_sweep(sweep_config(), workdir, train_fn=trainer,
                        load_config=lambda path: fake_base_config(), log=lambda *a: None)
  assert len(trainer.calls) == 3
  # Restart: the three finished runs are not redone.
  trainer = FakeTrainer()
  records = sweep_lib.run_sweep(sweep_config(), workdir, train_fn=trainer,
                                load_config=lambda path: fake_base_config(), log=lambda *a: None)
  assert len(trainer.calls) == 4 and len(records) == 7
  config = trainer.configs[0]
  assert config.num_train_steps == 40 and config.eval_every_steps == 10
  assert config.optimizer.warmup_steps == 4 and config.optimizer.learning_rate == 3e-3
  assert config.log_every_steps == 5
  assert config.data.cache_dir == os.path.join(workdir, "data_cache")  # shared by all runs
  assert dict(config.data.rates) == pytest.approx(
      {"tool_doc": 0.2, "trajectory": 0.2, "code": 0.3, "text": 0.3})
  lines = [json.loads(line) for line in open(os.path.join(workdir, "runs.jsonl"))]
  assert len(lines) == 7
  line = lines[0]
  assert line["mixture"] == pytest.approx({"agent": 0.1, "code": 0.45, "text": 0.45})
  expected = true_losses(0.1, 40)
  assert line["eval_loss"] == pytest.approx(expected)  # tool_doc/trajectory averaged
  assert line["steps"] == 40 and line["params"] == 12345
  assert [h["step"] for h in line["history"]] == [10, 20, 30, 40]
  assert line["history"][0]["eval_loss"]["code"] == pytest.approx(true_losses(0.1, 10)["code"])

  # Third call: nothing left to train.
  trainer = FakeTrainer()
  sweep_lib.run_sweep(sweep_config(), workdir, train_fn=trainer,
                      load_config=lambda path: fake_base_config(), log=lambda *a: None)
  assert trainer.calls == []

  # The recorded runs feed `fit`, including the nested step law.
  out = tmp_path / "rates.json"
  assert main(["fit", "--runs", os.path.join(workdir, "runs.jsonl"), "--output", str(out),
               "--bootstrap", "0", "--target_steps", "100000"]) == 0
  report = json.loads(out.read_text())
  assert report["step_law"]["min_r2"] > 0.999
  assert abs(report["rates"]["agent"] - true_mean_optimum()) < 0.02


def test_sweep_errors(tmp_path):
  load = lambda path: fake_base_config()  # noqa: E731
  bad = sweep_config()
  bad.mixtures = [{"agent": 0.5, "code": 0.3, "text": 0.3}]
  with pytest.raises(sweep_lib.SweepError, match=r"mixtures\[0\]: mixture proportions sum to 1.1"):
    sweep_lib.plan_sweep(bad, load_config=load)
  bad = sweep_config()
  bad.overrides = ml_collections.ConfigDict({"optimizer": {"learning_rte": 1.0}})
  with pytest.raises(sweep_lib.SweepError, match="overrides.optimizer.learning_rte"):
    sweep_lib.plan_sweep(bad, load_config=load)
  bad = sweep_config()
  bad.mixtures = [{"agent": 0.5, "web": 0.5}]
  with pytest.raises(sweep_lib.SweepError, match="differ from the domain map"):
    sweep_lib.plan_sweep(bad, load_config=load)

  def missing_task(config, workdir):
    return {"step": config.num_train_steps, "params": 1, "eval_loss": {"tool_doc": 1.0}}
  with pytest.raises(sweep_lib.SweepError, match=r"no eval loss for \['trajectory'\]"):
    sweep_lib.run_sweep(sweep_config(), str(tmp_path / "a"), train_fn=missing_task,
                        load_config=load, log=lambda *a: None)

  workdir = str(tmp_path / "b")
  sweep_lib.run_sweep(sweep_config(agents=(0.2,)), workdir, train_fn=FakeTrainer(),
                      load_config=load, log=lambda *a: None)
  with pytest.raises(sweep_lib.SweepError, match="a run of 40 steps, but this sweep trains 80"):
    sweep_lib.run_sweep(sweep_config(agents=(0.2,)), workdir, steps=80, train_fn=FakeTrainer(),
                        load_config=load, log=lambda *a: None)


def test_bundled_sweep_config_plans_against_tiny():
  from heph_jax.config import load_config_file
  path = os.path.join(REPO, "configs", "mixing_sweep.py")
  base, domains, mixtures = sweep_lib.plan_sweep(load_config_file(path), path)
  assert domains == TASKS
  agents = [m["agent"] for m, _ in mixtures]
  assert len(agents) >= 5 and len(set(agents)) == len(agents)
  for mixture, task_rates in mixtures:
    assert mixture["code"] == pytest.approx(mixture["text"])
    assert set(task_rates) == set(base.data.sources.keys())
  assert base.num_train_steps == load_config_file(path).steps
  assert base.optimizer.warmup_steps <= base.num_train_steps


def test_sweep_reads_final_eval_from_metrics_when_trainer_returns_none(tmp_path):
  # A run finished before a kill: the trainer resumes, has nothing to do and evaluates nothing.
  trainer = FakeTrainer()

  def finished_run(config, workdir):
    result = trainer(config, workdir)
    return {**result, "eval_loss": {}}
  records = sweep_lib.run_sweep(sweep_config(agents=(0.3,)), str(tmp_path), train_fn=finished_run,
                                load_config=lambda path: fake_base_config(), log=lambda *a: None)
  assert records[0]["eval_loss"] == pytest.approx(true_losses(0.3, 40))


@pytest.mark.slow
def test_real_sweep_with_tiny_trainer(tmp_path):
  """Three short runs of the real trainer on the bundled data, then `fit` on them."""
  pytest.importorskip("heph_jax.train")
  workdir = tmp_path / "sweep"
  cfg = tmp_path / "sweep_config.py"
  cfg.write_text(
      "import importlib.util\n"
      f"spec = importlib.util.spec_from_file_location('s', {os.path.join(REPO, 'configs', 'mixing_sweep.py')!r})\n"
      "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
      "def get_config():\n"
      "  c = m.get_config()\n"
      f"  c.base_config = {os.path.join(REPO, 'configs', 'tiny.py')!r}\n"
      "  c.mixtures = m.mixtures((0.2, 0.4, 0.6))\n"
      "  c.num_evals = 2\n"
      "  return c\n")
  cwd = os.getcwd()
  os.chdir(REPO)  # the tiny config names data files relative to the repository
  try:
    assert main(["sweep", "--config", str(cfg), "--workdir", str(workdir), "--steps", "6"]) == 0
  finally:
    os.chdir(cwd)
  lines = [json.loads(line) for line in open(workdir / "runs.jsonl")]
  assert len(lines) == 3 and all(line["steps"] == 6 and line["params"] > 0 for line in lines)
  assert all(np.isfinite(v) for line in lines for v in line["eval_loss"].values())
  out = tmp_path / "rates.json"
  assert main(["fit", "--runs", str(workdir / "runs.jsonl"), "--output", str(out),
               "--bootstrap", "0"]) == 0
  assert sum(json.loads(out.read_text())["rates"].values()) == pytest.approx(1.0)
