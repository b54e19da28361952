"""python -m heph_jax.export: a training checkpoint -> an HF directory transformers loads as is.

Fast tests write the checkpoint with heph_jax.training.checkpoint directly; the slow ones run the
trainer (periodic export, init_from="hf:DIR" first-step loss against transformers).
"""
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from heph_jax.config import load_config_file, model_config
from heph_jax.data.tokenizers import load_tokenizer
from heph_jax.export import __main__ as export_cli
from heph_jax.model import llama
from heph_jax.training import checkpoint
from heph_jax.training.metrics import read_metrics
from hf_testing import random_tokens, torch_logits

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUNDLED_TOKENIZER = os.path.join(REPO, "data", "tokenizer", "tokenizer.model")
TEXTS = ["def add(a, b):\n    return a + b", "Call the weather API for Paris, then <s> summarize.",
         " leading space and  double  spaces", "Ünïcödé and 数字 42"]


def copy_tokenizer(directory) -> str:
  """A private copy of the bundled tokenizer (the tests must not see it change under them)."""
  path = os.path.join(str(directory), "tokenizer.model")
  shutil.copyfile(BUNDLED_TOKENIZER, path)
  return "sp:" + path


def tiny_config(tokenizer, tie=False):
  config = load_config_file(os.path.join(REPO, "configs", "tiny.py"))
  config.data.tokenizer = tokenizer
  vocab_size = load_tokenizer(tokenizer).vocab_size
  config.model.update(dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           tie_word_embeddings=tie, rms_norm_eps=1e-5, rope_theta=500000.0))
  return config


def write_run(workdir, config, step=3, seed=0):
  """A checkpoint as the trainer writes it: {step, params, opt_state} + the config."""
  cfg = model_config(config)
  rng = np.random.RandomState(seed)
  shapes = jax.eval_shape(lambda: llama.init(cfg, jax.random.PRNGKey(0)))
  params = jax.tree_util.tree_map_with_path(  # random, norm scales too (as after training)
      lambda path, s: jnp.asarray((1.0 + 0.2 * rng.randn(*s.shape) if "scale" in str(path)
                                   else 0.05 * rng.randn(*s.shape)).astype(np.float32)), shapes)
  state = {"step": jnp.int32(step), "params": params,
           "opt_state": jax.tree.map(jnp.zeros_like, {"mu": params, "nu": params})}
  manager = checkpoint.make_manager(str(workdir), keep=3, async_save=False)
  checkpoint.save(manager, step, state, None, config, force=True)
  manager.wait_until_finished()
  manager.close()
  return cfg, params


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  config = tiny_config(copy_tokenizer(tmp_path_factory.mktemp("tokenizer")))
  write_run(workdir, config, step=2, seed=1)
  cfg, params = write_run(workdir, config, step=3, seed=0)
  return str(workdir), cfg, params, config.data.tokenizer


def test_cli_export_loads_in_transformers(run, tmp_path):
  workdir, cfg, params, _ = run
  out = str(tmp_path / "hf")
  assert export_cli.main(["--workdir", workdir, "--out", out]) == 0
  for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.model",
               "tokenizer_config.json"):
    assert os.path.exists(os.path.join(out, name)), name
  _, _, restored, step = checkpoint.restore_params(workdir)
  assert step == 3
  model = AutoModelForCausalLM.from_pretrained(out).eval()
  tokens = random_tokens(cfg.vocab_size, seed=3)
  ours = np.asarray(llama.apply(cfg.replace(dtype="float32"), restored, tokens))
  np.testing.assert_allclose(torch_logits(model, tokens), ours, rtol=0, atol=1e-4)
  np.testing.assert_allclose(ours, np.asarray(llama.apply(cfg.replace(dtype="float32"), params, tokens)),
                             rtol=0, atol=1e-6)  # the newest step was exported


def test_cli_tokenizer_encodes_like_ours(run, tmp_path):
  workdir, _, _, tokenizer = run
  out = str(tmp_path / "hf")
  assert export_cli.main(["--workdir", workdir, "--out", out, "--dtype", "bfloat16"]) == 0
  theirs, ours = AutoTokenizer.from_pretrained(out), load_tokenizer(tokenizer)
  for text in TEXTS:
    if text[:1].isspace():
      # transformers drops SentencePiece's dummy prefix before leading whitespace, sp: keeps it
      # (tests/data/test_tokenizer.py::test_sp_spec_is_sentencepiece_on_leading_whitespace).
      ids = ours.encode(text)  # exactly one "▁" more at the start
      assert ours.decode(ids[:1]) in ("", " ") and ids[1:] == theirs.encode(text, add_special_tokens=False), text
      continue
    assert theirs.encode(text, add_special_tokens=False) == ours.encode(text), text
    assert theirs.encode(text) == ours.encode(text, add_special_tokens=True), text
  model = AutoModelForCausalLM.from_pretrained(out)
  assert str(model.dtype) == "torch.bfloat16"


def test_cli_step_and_errors(run, tmp_path, capsys, monkeypatch):
  workdir, cfg, _, _ = run
  out = str(tmp_path / "hf2")
  assert export_cli.main(["--workdir", workdir, "--step", "2", "--out", out]) == 0
  older = AutoModelForCausalLM.from_pretrained(out).eval()
  _, _, params2, _ = checkpoint.restore_params(workdir, step=2)
  # The forms init_from="ckpt:..." accepts, relative to the working directory as users type them.
  monkeypatch.chdir(os.path.dirname(workdir))
  rel = os.path.basename(workdir)
  for spec in (rel + "@2", os.path.join(rel, "checkpoints", "2")):
    _, _, same, step = checkpoint.restore_params(spec)
    assert step == 2
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(params2)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  monkeypatch.undo()
  tokens = random_tokens(cfg.vocab_size, seed=4)
  np.testing.assert_allclose(torch_logits(older, tokens),
                             np.asarray(llama.apply(cfg.replace(dtype="float32"), params2, tokens)),
                             rtol=0, atol=1e-4)
  assert export_cli.main(["--workdir", workdir, "--step", "7", "--out", out]) == 2
  assert "no checkpoint for step 7" in capsys.readouterr().err
  assert export_cli.main(["--workdir", str(tmp_path / "none"), "--out", out]) == 2
  assert "no heph_jax checkpoints" in capsys.readouterr().err
  assert export_cli.main(["--workdir", workdir, "--out", out, "--tokenizer", "sp:/no/such.model"]) == 2
  assert "/no/such.model" in capsys.readouterr().err


# ---- with the trainer (slow: a subprocess run of heph_jax.train) ------------------------------
RUN_CONFIG = '''
import ml_collections
from heph_jax.config import load_config_file


def get_config():
  config = load_config_file({tiny!r})
  config.data.tokenizer = {tokenizer!r}
  config.data.sources = ml_collections.ConfigDict(dict(text={text!r}))
  config.data.domains = ml_collections.ConfigDict(dict(text=["text"]))
  config.data.rates = ml_collections.ConfigDict(dict(text=1.0))
  config.data.validation_fraction = 0.2
  config.seq_len = 64
  config.global_batch_size = 8  # the 8 simulated devices (conftest) shard the batch
  config.num_train_steps = 3
  config.optimizer.warmup_steps = 1
  config.log_every_steps = 1
  config.eval_batches = 0
  config.checkpoint_every_steps = 0
  config.hf_export_every_steps = 3
  config.model.update(dict(vocab_size={vocab_size}, hidden_size=64, intermediate_size=128,
                           rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False))
  return config
'''


def write_run_config(tmp_path):
  words = ["tool", "call", "weather", "python", "return", "value", "list", "json", "api", "data"]
  rng = np.random.RandomState(0)
  with open(tmp_path / "text.jsonl", "w") as f:
    for i in range(60):
      content = " ".join(rng.choice(words, size=rng.randint(10, 40)))
      f.write(json.dumps({"type": "text", "id": f"t{i}", "source": "test", "content": content}) + "\n")
  path = tmp_path / "run_config.py"
  tokenizer = copy_tokenizer(tmp_path)
  path.write_text(RUN_CONFIG.format(tiny=os.path.join(REPO, "configs", "tiny.py"), tokenizer=tokenizer,
                                    text=str(tmp_path / "text.jsonl"),
                                    vocab_size=load_tokenizer(tokenizer).vocab_size))
  return str(path), tokenizer


def train(config_path, workdir, *overrides):
  env = dict(os.environ, PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, "-m", "heph_jax.train", "--config", config_path,
                           "--workdir", str(workdir), *overrides],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return read_metrics(workdir)


@pytest.mark.slow
def test_trained_model_exports_and_loads(tmp_path):
  config_path, tokenizer = write_run_config(tmp_path)
  workdir = tmp_path / "run"
  train(config_path, workdir)
  periodic = str(workdir / "hf" / "step_3")
  config, cfg, params, step = checkpoint.restore_params(str(workdir))
  assert step == 3
  model = AutoModelForCausalLM.from_pretrained(periodic).eval()
  tokens = random_tokens(cfg.vocab_size, seed=5)
  np.testing.assert_allclose(torch_logits(model, tokens),
                             np.asarray(llama.apply(cfg.replace(dtype="float32"), params, tokens)),
                             rtol=0, atol=1e-4)
  ours = load_tokenizer(tokenizer)
  assert AutoTokenizer.from_pretrained(periodic).encode(TEXTS[0]) == ours.encode(TEXTS[0], True)
  # The CLI, as a user runs it, writes the same tensors as the trainer's periodic export.
  out = str(tmp_path / "cli")
  result = subprocess.run([sys.executable, "-m", "heph_jax.export", "--workdir", str(workdir),
                           "--out", out], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  from safetensors.numpy import load_file
  a = load_file(os.path.join(periodic, "model.safetensors"))
  b = load_file(os.path.join(out, "model.safetensors"))
  assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_first_step_loss_after_init_from_hf_matches_transformers(tmp_path):
  import torch
  from heph_jax.data.pipeline import DataPipeline
  from hf_testing import randomize
  from transformers import LlamaConfig, LlamaForCausalLM
  config_path, tokenizer = write_run_config(tmp_path)
  config = load_config_file(config_path)
  cfg = model_config(config)
  hf_config = LlamaConfig(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
      num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
      num_key_value_heads=cfg.num_key_value_heads, rms_norm_eps=cfg.rms_norm_eps,
      rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
      max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=False)
  model = randomize(LlamaForCausalLM(hf_config), seed=9).eval()
  hf_dir = str(tmp_path / "hf_init")
  model.save_pretrained(hf_dir)
  workdir = tmp_path / "run"
  metrics = train(config_path, workdir, f"--config.init_from=hf:{hf_dir}", "--config.num_train_steps=1",
                  "--config.hf_export_every_steps=0")
  logged = [m for m in metrics if m.get("step") == 1 and "loss" in m]
  assert logged, metrics
  # The same first batch, and transformers' loss on it: each packed document on its own
  # (positions restart per document), next-token cross-entropy weighted as the trainer weighs it.
  pipeline = DataPipeline(config, load_tokenizer(tokenizer), str(workdir), log=lambda *_: None)
  batch = next(pipeline.train_iterator(config.global_batch_size))
  total, count = 0.0, 0.0
  for row in range(batch["tokens"].shape[0]):
    seg, tok, w = batch["segment_ids"][row], batch["tokens"][row], batch["loss_weights"][row]
    for segment in sorted(set(seg.tolist()) - {0}):
      where = np.flatnonzero(seg == segment)
      assert np.array_equal(batch["positions"][row][where], np.arange(len(where)))
      ids = tok[where]
      with torch.no_grad():
        logits = model(torch.as_tensor(ids[None], dtype=torch.long)).logits[0, :-1].double()
      ce = torch.nn.functional.cross_entropy(logits, torch.as_tensor(ids[1:], dtype=torch.long),
                                             reduction="none").numpy()
      total += float(np.sum(ce * w[where][1:]))
      count += float(np.sum(w[where][1:]))
  assert count > 0
  np.testing.assert_allclose(logged[0]["loss"], total / count, rtol=1e-5)
