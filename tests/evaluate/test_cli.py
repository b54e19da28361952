"""python -m heph_jax.evaluate / heph_jax.generate on an HF directory (random tiny Llama)."""
import json
import os
import subprocess
import sys

import pytest

from hf_testing import make_hf_model, save_hf_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
BFCL = os.path.join(ROOT, "tests", "fixtures", "bfcl")
SP = "sp:" + os.path.join(ROOT, "data", "tokenizer", "tokenizer.model")


def _run(module, *args):
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                        cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  from heph_jax.data.tokenizers import load_tokenizer
  vocab = load_tokenizer(SP).vocab_size
  return save_hf_model(make_hf_model("llama3", seed=0, vocab_size=vocab), tmp_path_factory.mktemp("hf"))


def test_evaluate_prints_one_json_object(hf_dir, tmp_path):
  out = tmp_path / "gen.jsonl"
  proc = _run("heph_jax.evaluate", f"--hf={hf_dir}", f"--tokenizer={SP}", f"--bfcl={BFCL}",
              "--categories=simple,irrelevance", "--limit=2", "--max_new_tokens=4", f"--out={out}")
  assert proc.returncode == 0, proc.stderr
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["num_questions"] == {"irrelevance": 2, "simple": 2}
  assert result["accuracy"]["simple"] == 0.0  # random weights write no valid call
  records = [json.loads(l) for l in out.read_text().splitlines()]
  assert len(records) == 4 and all("output" in r for r in records)


def test_evaluate_bad_input_exits_2(hf_dir):
  proc = _run("heph_jax.evaluate", f"--hf={hf_dir}", f"--tokenizer={SP}", f"--bfcl={BFCL}", "--categories=live_x")
  assert proc.returncode == 2 and "heph_jax.evaluate: category 'live_x'" in proc.stderr


def test_generate_prints_text(hf_dir):
  proc = _run("heph_jax.generate", f"--hf={hf_dir}", f"--tokenizer={SP}", "--prompt=def add(a, b):",
              "--prompt=Hello", "--max_new_tokens=5")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.count("\n") >= 2 and proc.stdout.strip()  # one printed text per prompt


@pytest.mark.parametrize("module, missing", [("heph_jax.evaluate", "--bfcl"), ("heph_jax.generate", "--prompt")])
def test_a_missing_required_flag_exits_2_naming_it(module, missing, capsys):
  """Both tools read flags the one CLI way (heph_jax/cli.py): declared required, exit 2, `prog: ...`."""
  import importlib
  tool = importlib.import_module(module if module.endswith("generate") else module + ".__main__")
  assert tool.main(["--hf=/nonexistent"]) == 2
  assert f"{module}: {missing} is required" in capsys.readouterr().err
