"""Packing: rows hold whole documents with restarting positions, and the packed loss equals the
loss of the same documents run one by one (no cross-document attention or targets)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from heph_jax.data.pipeline.packing import Packer, stack_rows
from heph_jax.model import ModelConfig, llama
from heph_jax.training.step import loss_sums

CFG = ModelConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, dtype="float32")


def _docs(seed, n=12, seq_len=32):
  rng = np.random.RandomState(seed)
  docs = []
  for _ in range(n):
    length = rng.randint(2, seq_len + 1)
    docs.append((rng.randint(0, CFG.vocab_size, length), rng.randint(0, 2, length)))
  return docs


def _pack(docs, seq_len, num_rows):
  packer, rows = Packer(seq_len, num_rows), []
  for tokens, weights in docs:
    rows.extend(packer.add(tokens, weights, task_id=0))
  while packer._fill.any():  # flush the open rows for the test
    rows.append(packer._take(int(np.argmax(packer._fill))))
  return rows


def test_rows_hold_every_document_intact():
  docs = _docs(0)
  rows = _pack(docs, 32, 3)
  recovered = []
  for row in rows:
    for seg in range(1, row["segment_ids"].max() + 1):
      sel = row["segment_ids"] == seg
      np.testing.assert_array_equal(row["positions"][sel], np.arange(sel.sum()))
      recovered.append((tuple(row["tokens"][sel]), tuple(row["loss_weights"][sel])))
  expected = sorted((tuple(t), tuple(w)) for t, w in docs)
  assert sorted(recovered) == expected
  packed_tokens = sum(int((r["segment_ids"] > 0).sum()) for r in rows)
  assert packed_tokens == sum(len(t) for t, _ in docs)


def test_packer_state_round_trip():
  docs = _docs(1, n=20)
  a, b = Packer(32, 4), Packer(32, 4)
  out_a, out_b = [], []
  for tokens, w in docs[:9]:
    out_a += a.add(tokens, w, 0)
    out_b += b.add(tokens, w, 0)
  c = Packer(32, 4)
  c.restore(b.state())
  for tokens, w in docs[9:]:
    out_a += a.add(tokens, w, 0)
    out_b += c.add(tokens, w, 0)
  for x, y in zip(out_a, out_b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])


_apply = jax.jit(lambda params, tokens: llama.apply(CFG, params, tokens))


def _reference_doc_loss(params, tokens, weights):
  """One document alone, plain next-token cross-entropy with its own weights (no packing code).

  Right-padded to 32 so one compile serves every length: causal attention keeps the padding from
  touching the document's logits.
  """
  padded = np.zeros(32, np.int32)
  padded[:len(tokens)] = tokens
  logits = _apply(params, jnp.asarray(padded)[None])[0, :len(tokens) - 1]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(tokens[1:]))
  w = jnp.asarray(weights[1:], jnp.float32)
  return float(jnp.sum(ce * w)), float(jnp.sum(w))


def test_packed_loss_equals_unpacked_loss():
  params = llama.init(CFG, jax.random.PRNGKey(3))
  docs = _docs(2, n=10)
  batch = {k: jnp.asarray(v) for k, v in stack_rows(_pack(docs, 32, 2)).items() if k != "task_ids"}
  assert int(batch["segment_ids"].max()) >= 2, "test needs rows with several documents"
  total, count = loss_sums(CFG, params, batch)
  ref = [_reference_doc_loss(params, t, w) for t, w in docs]
  ref_total, ref_count = sum(r[0] for r in ref), sum(r[1] for r in ref)
  assert float(count) == ref_count
  np.testing.assert_allclose(float(total), ref_total, rtol=2e-5)
