"""Tiny random Hugging Face Llama/Mistral models for the tests/test_hf_*.py files (no downloads)."""
import copy

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

_COMMON = dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
               max_position_embeddings=128, bos_token_id=1, eos_token_id=2)

# name -> (HF config class, model class, config kwargs)
CONFIGS = {
    # GQA, rope_theta 500000, llama3 rope scaling (a short original context so that the scaled
    # band of frequencies shows within a 40-token test), untied.
    "llama3": (LlamaConfig, LlamaForCausalLM, dict(
        _COMMON, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16},
        tie_word_embeddings=False)),
    # MHA, transformers' default eps (1e-6), untied and tied.
    "llama2": (LlamaConfig, LlamaForCausalLM, dict(
        _COMMON, num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False)),
    "llama2_tied": (LlamaConfig, LlamaForCausalLM, dict(
        _COMMON, num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True)),
    # GQA with head_dim * heads != hidden_size (as Mistral-Nemo), a window longer than the tests.
    "mistral": (MistralConfig, MistralForCausalLM, dict(
        _COMMON, num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, sliding_window=64,
        tie_word_embeddings=False)),
}


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Every weight random and distinct (norm scales too: HF initializes them all to one)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, param in model.named_parameters():
      noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
      if name.endswith("norm.weight"):
        param.copy_(1.0 + 0.2 * noise)
      else:
        param.copy_(0.05 * noise)
  return model


def make_hf_model(name: str, seed: int = 0, **overrides):
  config_cls, model_cls, kwargs = CONFIGS[name]
  config = config_cls(**{**kwargs, **overrides})
  return randomize(model_cls(config), seed).eval()


def save_hf_model(model, out_dir, dtype=torch.float32, max_shard_size=None) -> str:
  kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
  if dtype != torch.float32:
    model = copy.deepcopy(model).to(dtype)  # .to() converts in place; keep the caller's model
  model.save_pretrained(str(out_dir), **kwargs)
  return str(out_dir)


def torch_logits(model, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.as_tensor(tokens, dtype=torch.long)).logits.float().numpy()


def random_tokens(vocab_size: int, shape=(2, 40), seed: int = 0) -> np.ndarray:
  return np.random.RandomState(seed).randint(0, vocab_size, shape).astype(np.int32)
