"""KV-cache decoding: greedy equals transformers generate(do_sample=False) token for token."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from heph_jax.export import hf
from heph_jax.model import decode, llama
from hf_testing import make_hf_model, save_hf_model

NEW_TOKENS = 12
PROMPT_LENGTHS = (3, 11, 7)  # different lengths: left padding, per-row positions


def _prompts(vocab, seed=0):
  rs = np.random.RandomState(seed)
  return [rs.randint(3, vocab, n).tolist() for n in PROMPT_LENGTHS]


def _hf_greedy(model, prompt, eos):
  with torch.no_grad():
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         do_sample=False, max_new_tokens=NEW_TOKENS, eos_token_id=eos, pad_token_id=0)
  return out[0, len(prompt):].tolist()


def _load(name, tmp_path_factory):
  model = make_hf_model(name, seed=4)
  cfg, params = hf.load(save_hf_model(model, tmp_path_factory.mktemp(name)))
  return model, cfg.replace(dtype="float32"), params


@pytest.fixture(scope="module", params=["llama3", "llama2", "mistral"])
def loaded(request, tmp_path_factory):
  """Each architecture: the transformers-parity tests."""
  return _load(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def gqa(tmp_path_factory):
  """Llama-3 shape (GQA, llama3 RoPE) only: the tests that do not compare with transformers."""
  return _load("llama3", tmp_path_factory)


def test_greedy_matches_transformers_generate(loaded):
  model, cfg, params = loaded
  prompts = _prompts(cfg.vocab_size)
  ours = decode.generate(cfg, params, prompts, decode.Sampling(max_new_tokens=NEW_TOKENS))
  for prompt, got in zip(prompts, ours):
    assert got == _hf_greedy(model, prompt, eos=None)
  assert len({tuple(g) for g in ours}) == len(prompts)  # not one degenerate sequence for all


def test_stops_at_eos(loaded):
  """Make row 0's 3rd greedy token an EOS id: that row stops at its first occurrence."""
  model, cfg, params = loaded
  prompts = _prompts(cfg.vocab_size)
  free = decode.generate(cfg, params, prompts, decode.Sampling(max_new_tokens=NEW_TOKENS))
  eos = free[0][2]
  ours = decode.generate(cfg, params, prompts, decode.Sampling(max_new_tokens=NEW_TOKENS, eos_ids=(eos,)))
  for prompt, got in zip(prompts, ours):
    assert got == _hf_greedy(model, prompt, eos=eos)
  assert ours[0] == free[0][:free[0].index(eos) + 1]
  assert any(len(got) < NEW_TOKENS for got in ours)


def test_stops_at_a_stop_sequence(gqa):
  """A two-token stop sequence: each row ends right after its first occurrence (included)."""
  _, cfg, params = gqa
  prompts = _prompts(cfg.vocab_size)
  free = decode.generate(cfg, params, prompts, decode.Sampling(max_new_tokens=NEW_TOKENS))
  seq = tuple(free[1][4:6])
  got = decode.generate(cfg, params, prompts, decode.Sampling(max_new_tokens=NEW_TOKENS, stop_sequences=(seq,)))
  for row in range(3):
    grams = [tuple(free[row][i - 1:i + 1]) for i in range(1, len(free[row]))]
    want = free[row][:grams.index(seq) + 2] if seq in grams else free[row]
    assert got[row] == want
  assert len(got[1]) <= 6 < len(free[1])


def test_cache_logits_match_full_forward(gqa):
  """Prefill + one step over the cache give the full forward's logits at those positions."""
  _, cfg, params = gqa
  tokens = np.random.RandomState(1).randint(0, cfg.vocab_size, (2, 9)).astype(np.int32)
  full = np.asarray(llama.apply(cfg, params, tokens))
  pad = jnp.zeros((2,), jnp.int32)
  cache = decode.init_cache(cfg, 2, 16)
  pos = jnp.broadcast_to(jnp.arange(8), (2, 8))
  pre, cache = decode.forward(cfg, params, jnp.asarray(tokens[:, :8]), pos, cache, 0, pad)
  step, _ = decode.forward(cfg, params, jnp.asarray(tokens[:, 8:]), jnp.full((2, 1), 8), cache, 8, pad)
  np.testing.assert_allclose(np.asarray(pre), full[:, :8], atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(step)[:, 0], full[:, 8], atol=1e-4, rtol=0)


def test_tiny_top_p_is_greedy(gqa):
  _, cfg, params = gqa
  prompts = _prompts(cfg.vocab_size, seed=2)
  greedy = decode.generate(cfg, params, prompts, decode.Sampling(max_new_tokens=6))
  nucleus = decode.generate(cfg, params, prompts, decode.Sampling(temperature=1.0, top_p=1e-6, max_new_tokens=6),
                            rng=jax.random.PRNGKey(3))
  assert nucleus == greedy


def test_sampling_distribution():
  """Frequencies of sampled ids follow softmax(logits / T), restricted to the top-p set."""
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  keys = jax.random.split(jax.random.PRNGKey(0), 20000)
  draw = jax.vmap(lambda k, t, p: decode.sample(logits, k, t, p)[0], in_axes=(0, None, None))
  counts = np.bincount(np.asarray(draw(keys, 1.0, 1.0)), minlength=4) / len(keys)
  np.testing.assert_allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.015)
  # top_p 0.7: 0.5 + 0.3 reach it -> renormalised over {0, 1}
  counts = np.bincount(np.asarray(draw(keys, 1.0, 0.7)), minlength=4) / len(keys)
  np.testing.assert_allclose(counts, [0.625, 0.375, 0, 0], atol=0.015)
  # temperature 0.5 squares the probabilities before renormalising
  p2 = np.array([0.25, 0.09, 0.0225, 0.0025]); p2 /= p2.sum()
  counts = np.bincount(np.asarray(draw(keys, 0.5, 1.0)), minlength=4) / len(keys)
  np.testing.assert_allclose(counts, p2, atol=0.015)


def test_truncate_at_stop():
  assert decode.truncate_at_stop("a<|eot|>b</s>", ["</s>", "<|eot|>"]) == ("a", True)
  assert decode.truncate_at_stop("abc", ["x"]) == ("abc", False)


def test_sharded_on_the_training_mesh_gives_the_same_tokens(gqa):
  """Params sharded as the trainer shards them (fsdp x tensor), cache constrained by the same rules."""
  import flax.linen as nn
  from configs import base
  from heph_jax.parallel.mesh import make_mesh, rules_tuple
  from heph_jax.training.state import param_shardings
  _, cfg, params = gqa
  prompts = _prompts(cfg.vocab_size, seed=5) + [[5, 6]]  # 4 rows: divisible by data x fsdp
  sampling = decode.Sampling(max_new_tokens=6)
  single = decode.generate(cfg, params, prompts, sampling)
  rules = base.get_config().logical_axis_rules
  mesh = make_mesh(dict(dcn_data=1, data=2, fsdp=2, tensor=2))
  sharded = jax.device_put(params, param_shardings(cfg, mesh, rules))
  assert len(sharded["layers"]["attn"]["q"].sharding.device_set) == 8
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules_tuple(rules)):
    got = decode.generate(cfg, sharded, prompts, sampling)
  assert got == single
