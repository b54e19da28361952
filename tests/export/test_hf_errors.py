"""Bad Hugging Face input fails early with a message naming the tensor, file or config key."""
import json
import os
import re
import warnings

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from heph_jax.export import hf
from heph_jax.export.hf_config import HFCheckpointError
from heph_jax.errors import ConfigError
from hf_testing import make_hf_model, save_hf_model


@pytest.fixture(scope="module")
def model():
  return make_hf_model("llama3", seed=7)


@pytest.fixture
def hf_dir(model, tmp_path):
  return save_hf_model(model, tmp_path / "ckpt")


def _edit_config(hf_dir, **changes):
  path = os.path.join(hf_dir, "config.json")
  with open(path) as f:
    values = json.load(f)
  values.update(changes)
  with open(path, "w") as f:
    json.dump(values, f)


def _edit_tensors(hf_dir, edit):
  path = os.path.join(hf_dir, "model.safetensors")
  tensors = load_file(path)
  edit(tensors)
  save_file(tensors, path, metadata={"format": "pt"})


def test_missing_tensor(hf_dir):
  name = "model.layers.1.mlp.up_proj.weight"
  _edit_tensors(hf_dir, lambda t: t.pop(name))
  with pytest.raises(HFCheckpointError, match=re.escape(name)) as info:
    hf.load(hf_dir)
  assert "model.safetensors" in str(info.value) and "missing" in str(info.value)


def test_missing_tensor_in_sharded_checkpoint(model, tmp_path):
  hf_dir = save_hf_model(model, tmp_path / "ckpt", max_shard_size="60KB")
  index_path = os.path.join(hf_dir, "model.safetensors.index.json")
  with open(index_path) as f:
    index = json.load(f)
  del index["weight_map"]["model.norm.weight"]
  with open(index_path, "w") as f:
    json.dump(index, f)
  with pytest.raises(HFCheckpointError, match=r"model\.safetensors\.index\.json.*'model\.norm\.weight'"):
    hf.load(hf_dir)


def test_index_names_a_missing_file(model, tmp_path):
  hf_dir = save_hf_model(model, tmp_path / "ckpt", max_shard_size="60KB")
  victim = sorted(f for f in os.listdir(hf_dir) if f.startswith("model-"))[0]
  os.remove(os.path.join(hf_dir, victim))
  with pytest.raises(HFCheckpointError, match=re.escape(victim)):
    hf.load(hf_dir)


def test_wrong_shape(hf_dir):
  name = "model.layers.0.self_attn.k_proj.weight"
  _edit_tensors(hf_dir, lambda t: t.__setitem__(name, np.zeros((16, 64), np.float32)))
  with pytest.raises(HFCheckpointError, match=re.escape(name)) as info:
    hf.load(hf_dir)
  assert "[16, 64]" in str(info.value) and "[32, 64]" in str(info.value)


def test_unexpected_tensor(hf_dir):
  name = "model.layers.0.self_attn.q_proj.bias"
  _edit_tensors(hf_dir, lambda t: t.__setitem__(name, np.zeros((64,), np.float32)))
  with pytest.raises(HFCheckpointError, match=re.escape(name)):
    hf.load(hf_dir)


def test_integer_tensor(hf_dir):
  name = "model.norm.weight"
  _edit_tensors(hf_dir, lambda t: t.__setitem__(name, np.zeros((64,), np.int32)))
  with pytest.raises(HFCheckpointError, match=re.escape(name) + ".*I32"):
    hf.load(hf_dir)


def test_unknown_architecture(hf_dir):
  _edit_config(hf_dir, architectures=["GPT2LMHeadModel"], model_type="gpt2")
  with pytest.raises(HFCheckpointError, match=r"config\.json.*GPT2LMHeadModel.*LlamaForCausalLM"):
    hf.load(hf_dir)


def test_unsupported_settings(hf_dir):
  for changes, pattern in (({"hidden_act": "gelu"}, "hidden_act='gelu'"),
                           ({"attention_bias": True}, "attention_bias"),
                           ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0,
                                                 "rope_theta": 1e4}}, "rope_type 'yarn'"),
                           ({"vocab_size": None}, r"missing required key\(s\) \['vocab_size'\]")):
    with pytest.raises(HFCheckpointError, match=pattern):
      hf.config_from_hf({**json.load(open(os.path.join(hf_dir, "config.json"))), **changes})


def test_pickle_only_checkpoint(model, tmp_path):
  hf_dir = tmp_path / "pickled"
  hf_dir.mkdir()
  model.config.to_json_file(str(hf_dir / "config.json"))
  torch.save(model.state_dict(), str(hf_dir / "pytorch_model.bin"))
  with pytest.raises(HFCheckpointError, match="pytorch_model.bin") as info:
    hf.load(str(hf_dir))
  message = str(info.value)
  assert "safetensors" in message and "save_pretrained" in message


def test_missing_directory_and_config(tmp_path):
  with pytest.raises(HFCheckpointError, match="no such directory"):
    hf.load(str(tmp_path / "nowhere"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(HFCheckpointError, match=r"config\.json: missing"):
    hf.load(str(tmp_path / "empty"))


def test_load_params_for_checks_the_training_config(hf_dir):
  cfg = hf.config_from_hf(hf_dir)
  with pytest.raises(ConfigError, match=rf"config\.model\.vocab_size=1000: the HF checkpoint at "
                                        rf"{re.escape(hf_dir)} has 512"):
    hf.load_params_for(cfg.replace(vocab_size=1000), hf_dir)
  with pytest.raises(ConfigError, match=r"config\.model\.tie_word_embeddings=True"):
    hf.load_params_for(cfg.replace(tie_word_embeddings=True), hf_dir)
  with pytest.raises(ConfigError, match=r"config\.model\.num_key_value_heads=4"):
    hf.load_params_for(cfg.replace(num_key_value_heads=4), hf_dir)
  # A numeric-only change (a larger rope_theta for long context) loads, with a warning.
  with pytest.warns(UserWarning, match=r"config\.model\.rope_theta=1000000\.0"):
    params = hf.load_params_for(cfg.replace(rope_theta=1e6, param_dtype="bfloat16"), hf_dir)
  assert params["layers"]["attn"]["q"].dtype == np.dtype("bfloat16")


def test_sliding_window_shorter_than_sequences_warns(tmp_path):
  hf_dir = save_hf_model(make_hf_model("mistral", seed=8), tmp_path / "mistral")
  cfg = hf.config_from_hf(hf_dir)
  assert cfg.sliding_window == 64
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    hf.load_params_for(cfg, hf_dir, seq_len=64)
  with pytest.warns(UserWarning, match="sliding_window=64 is shorter than the sequence length 128"):
    hf.load_params_for(cfg, hf_dir, seq_len=128)


def test_save_rejects_params_of_another_shape(hf_dir, tmp_path):
  cfg, params = hf.load(hf_dir)
  params["layers"]["mlp"]["up"] = params["layers"]["mlp"]["up"][:, :, :8]
  with pytest.raises(ValueError, match=r"layers/mlp/up has shape \[2, 64, 8\], expected \[2, 64, 160\]"):
    hf.save(cfg, params, str(tmp_path / "out"))
  with pytest.raises(ValueError, match="dtype must be one of"):
    hf.save(cfg, params, str(tmp_path / "out"), dtype="int8")
