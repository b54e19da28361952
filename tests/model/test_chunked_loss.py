"""config.loss_chunk_size: the loss computed over sequence chunks equals the whole-logits loss, in
value and gradients, and the train step with it never holds the whole [B, S, vocab] logits."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from heph_jax.model import ModelConfig, llama
from heph_jax.training.step import loss_sums


def _config(tied):
  return ModelConfig(vocab_size=211, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, dtype="float32",
                     tie_word_embeddings=tied)


def _batch(seed, batch, seq, vocab):
  rng = np.random.default_rng(seed)
  segment_ids = np.repeat(rng.integers(1, 4, size=(batch, 1)), seq, axis=1).astype(np.int32)
  segment_ids[:, seq // 3:] += 1  # two documents per row
  segment_ids[0, -5:] = 0         # and a padding tail
  positions = np.zeros((batch, seq), np.int32)
  for row in range(batch):
    for doc in np.unique(segment_ids[row]):
      where = np.flatnonzero(segment_ids[row] == doc)
      positions[row, where] = np.arange(len(where))
  return {"tokens": jnp.asarray(rng.integers(0, vocab, size=(batch, seq)), jnp.int32),
          "segment_ids": jnp.asarray(segment_ids), "positions": jnp.asarray(positions),
          "loss_weights": jnp.asarray(rng.integers(0, 2, size=(batch, seq)), jnp.int32)}


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("chunk", [8, 13, 40])  # divides 40; does not (padded last chunk); = seq
def test_chunked_loss_and_gradients_match_whole_logits(tied, chunk):
  cfg = _config(tied)
  params = llama.init(cfg, jax.random.PRNGKey(1))
  batch = _batch(2, 3, 40, cfg.vocab_size)

  def loss(params, chunk_size):
    total, count = loss_sums(cfg, params, batch, chunk_size)
    return total / count, count

  (whole, whole_count), whole_grads = jax.value_and_grad(loss, has_aux=True)(params, 0)
  (chunked, count), grads = jax.value_and_grad(loss, has_aux=True)(params, chunk)
  assert count == whole_count
  np.testing.assert_allclose(float(chunked), float(whole), rtol=1e-6)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(whole_grads)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-7,
                               err_msg=jax.tree_util.keystr(path))


def test_whole_logits_never_materialize():
  """The compiled chunked step holds no [B, S, vocab] float32 buffer; the unchunked one does."""
  cfg = _config(False)
  params = llama.init(cfg, jax.random.PRNGKey(1))
  batch = _batch(3, 2, 64, cfg.vocab_size)

  def hlo(chunk_size):
    grad = jax.grad(lambda p: loss_sums(cfg, p, batch, chunk_size)[0])
    return jax.jit(grad).lower(params).compile().as_text()

  whole_shape = f"f32[2,64,{cfg.vocab_size}]"
  flat_shape = f"f32[128,{cfg.vocab_size}]"
  assert whole_shape in hlo(0) or flat_shape in hlo(0)
  chunked = hlo(16)
  assert whole_shape not in chunked and flat_shape not in chunked
  assert f"f32[32,{cfg.vocab_size}]" in chunked or f"f32[2,16,{cfg.vocab_size}]" in chunked
