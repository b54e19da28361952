"""heph_jax on Hugging Face weights gives transformers' logits (torch CPU, tiny random models)."""
import json
import os

import jax
import numpy as np
import pytest
import torch

from heph_jax.export import hf
from heph_jax.model import llama
from hf_testing import CONFIGS, make_hf_model, random_tokens, save_hf_model, torch_logits

TOLERANCE = 1e-4  # fp32


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def hf_checkpoint(request, tmp_path_factory):
  """(name, torch model, directory) per config; llama3 is saved sharded (index + several files)."""
  name = request.param
  model = make_hf_model(name, seed=1)
  shard = "60KB" if name == "llama3" else None
  out = save_hf_model(model, tmp_path_factory.mktemp(name), max_shard_size=shard)
  return name, model, out


def test_params_have_the_model_structure(hf_checkpoint):
  _, _, hf_dir = hf_checkpoint
  cfg, params = hf.load(hf_dir)
  expected = jax.eval_shape(lambda: llama.init(cfg, jax.random.PRNGKey(0)))
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    assert got.shape == want.shape and got.dtype == np.float32


def test_logits_match_transformers(hf_checkpoint):
  name, model, hf_dir = hf_checkpoint
  cfg, params = hf.load(hf_dir)
  cfg = cfg.replace(dtype="float32")
  tokens = random_tokens(cfg.vocab_size)
  ours = np.asarray(llama.apply(cfg, params, tokens))
  theirs = torch_logits(model, tokens)
  assert ours.shape == theirs.shape
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=TOLERANCE)
  assert theirs.std() > 100 * TOLERANCE  # the logits are far from trivially equal


def test_logits_match_transformers_over_several_attention_blocks(hf_checkpoint):
  """Seq 300: the XLA path splits causal attention into query blocks (heph_jax/kernels/xla_attention.py)."""
  name, model, hf_dir = hf_checkpoint
  window = getattr(model.config, "sliding_window", None)
  model.config.sliding_window = None  # heph_jax attends over the full causal context (documented)
  cfg, params = hf.load(hf_dir)
  cfg = cfg.replace(dtype="float32")
  tokens = random_tokens(cfg.vocab_size, shape=(1, 300), seed=5)
  try:
    theirs = torch_logits(model, tokens)
  finally:
    model.config.sliding_window = window
  np.testing.assert_allclose(np.asarray(llama.apply(cfg, params, tokens)), theirs, rtol=0, atol=TOLERANCE)


def test_config_fields_are_carried(hf_checkpoint):
  name, model, hf_dir = hf_checkpoint
  cfg = hf.config_from_hf(hf_dir)
  theirs = model.config
  assert cfg.rms_norm_eps == theirs.rms_norm_eps  # 1e-6 default in HF, 1e-5 in ours
  assert cfg.rope_theta == theirs.rope_parameters["rope_theta"]
  assert cfg.num_key_value_heads == theirs.num_key_value_heads
  assert cfg.head_dim == theirs.head_dim
  assert cfg.tie_word_embeddings == theirs.tie_word_embeddings
  assert cfg.architecture == ("mistral" if name == "mistral" else "llama")
  assert cfg.sliding_window == getattr(theirs, "sliding_window", None)


def test_llama3_rope_scaling_is_applied(tmp_path):
  """Guards the parity test: without the llama3 scaling the logits would visibly differ."""
  model = make_hf_model("llama3", seed=3)
  cfg, params = hf.load(save_hf_model(model, tmp_path))
  cfg = cfg.replace(dtype="float32")
  assert cfg.rope_scaling["rope_type"] == "llama3"
  tokens = random_tokens(cfg.vocab_size)
  unscaled = np.asarray(llama.apply(cfg.replace(rope_scaling=None), params, tokens))
  assert np.abs(unscaled - torch_logits(model, tokens)).max() > 10 * TOLERANCE


def test_old_style_rope_fields_read_the_same(hf_checkpoint):
  """transformers v4 wrote rope_theta + rope_scaling ({"type": ...}) instead of rope_parameters."""
  _, _, hf_dir = hf_checkpoint
  with open(os.path.join(hf_dir, "config.json")) as f:
    values = json.load(f)
  rope = dict(values.pop("rope_parameters"))
  values["rope_theta"] = rope.pop("rope_theta")
  rope_type = rope.pop("rope_type")
  values["rope_scaling"] = None if rope_type == "default" else {"type": rope_type, **rope}
  assert hf.config_from_hf(values) == hf.config_from_hf(hf_dir)


def test_bf16_checkpoint(tmp_path):
  model = make_hf_model("llama3", seed=2)
  hf_dir = save_hf_model(model, tmp_path, dtype=torch.bfloat16)
  # Reference: transformers' fp32 model built from the same bf16 file.
  reference = type(model).from_pretrained(hf_dir, dtype=torch.float32).eval()
  cfg, params = hf.load(hf_dir)  # float32 params from bf16 tensors (exact upcast)
  state = reference.state_dict()
  np.testing.assert_array_equal(np.asarray(params["embed"]["embedding"]),
                                state["model.embed_tokens.weight"].numpy())
  tokens = random_tokens(cfg.vocab_size)
  ours = np.asarray(llama.apply(cfg.replace(dtype="float32"), params, tokens))
  np.testing.assert_allclose(ours, torch_logits(reference, tokens), rtol=0, atol=TOLERANCE)
  _, params_bf16 = hf.load(hf_dir, dtype="bfloat16")
  assert all(leaf.dtype == jax.numpy.bfloat16 for leaf in jax.tree.leaves(params_bf16))
  for a, b in zip(jax.tree.leaves(params_bf16), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b))
