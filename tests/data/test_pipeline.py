"""Data pipeline: deterministic, exactly resumable, token shares at the configured rates, and
per-host shards that are disjoint and together cover the stream."""
import collections

import numpy as np

from conftest import tiny_test_config
from heph_jax.data.pipeline import DataPipeline
from heph_jax.data.tokenizers import load_tokenizer

RATES = {"code": 0.5, "text": 0.2, "tool_doc": 0.2, "trajectory": 0.1}


def _pipeline(corpus, tmp_path, process_index=0, process_count=1, **overrides):
  config = tiny_test_config(corpus, **overrides)
  tok = load_tokenizer(config.data.tokenizer)
  return DataPipeline(config, tok, str(tmp_path), process_index, process_count, log=lambda *_: None)


def _equal(a, b):
  return all(np.array_equal(a[k], b[k]) for k in a)


def test_same_seed_same_batches(tiny_corpus, tmp_path):
  a = _pipeline(tiny_corpus, tmp_path).train_iterator(8)
  b = _pipeline(tiny_corpus, tmp_path).train_iterator(8)
  for _ in range(5):
    assert _equal(next(a), next(b))
  other = _pipeline(tiny_corpus, tmp_path, seed=1).train_iterator(8)
  assert not _equal(next(_pipeline(tiny_corpus, tmp_path).train_iterator(8)), next(other))


def test_saved_iterator_resumes_with_exactly_the_next_batch(tiny_corpus, tmp_path):
  it = _pipeline(tiny_corpus, tmp_path).train_iterator(8)
  for _ in range(7):
    next(it)
  it.save(str(tmp_path / "state"))
  expected = [next(it) for _ in range(4)]
  fresh = _pipeline(tiny_corpus, tmp_path).train_iterator(8)
  fresh.restore(str(tmp_path / "state"))
  for want in expected:
    assert _equal(next(fresh), want)


def test_token_shares_match_rates(tiny_corpus, tmp_path):
  pipe = _pipeline(tiny_corpus, tmp_path, **{f"data.rates.{t}": r for t, r in RATES.items()})
  it = pipe.train_iterator(8)
  counts = np.zeros(len(pipe.tasks))
  for _ in range(200):
    ids = it.next_with_tasks()["task_ids"]
    counts += np.bincount(ids[ids >= 0], minlength=len(pipe.tasks))
  shares = dict(zip(pipe.tasks, counts / counts.sum()))
  for task, rate in RATES.items():
    assert abs(shares[task] - rate) <= 0.03, shares


def test_loss_weights_and_segments_are_consistent(tiny_corpus, tmp_path):
  batch = next(_pipeline(tiny_corpus, tmp_path).train_iterator(8))
  pad = batch["segment_ids"] == 0
  assert not batch["loss_weights"][pad].any()
  assert (batch["positions"][pad] == 0).all()
  assert batch["tokens"].shape == (8, 64) and batch["tokens"].dtype == np.int32


def _one_epoch_documents(pipe, task):
  """Every document (as a token tuple) this host's shard of `task` yields in one epoch."""
  import seqio
  ds = seqio.get_mixture_or_task(pipe.task_names[task]).get_dataset(
      sequence_length=pipe._LENGTHS, split="train", shuffle=False, num_epochs=1,
      shard_info=pipe._shard_info(), trim_output_features=False)
  return [tuple(ex["targets"]) for ex in ds.as_numpy_iterator()]


def test_two_hosts_read_disjoint_shards_covering_the_stream(tiny_corpus, tmp_path):
  whole = _one_epoch_documents(_pipeline(tiny_corpus, tmp_path), "code")
  by_records = {"data.process_sharding": "records"}
  host0 = _one_epoch_documents(_pipeline(tiny_corpus, tmp_path, 0, 2, **by_records), "code")
  host1 = _one_epoch_documents(_pipeline(tiny_corpus, tmp_path, 1, 2, **by_records), "code")
  assert host0 and host1
  # Together exactly the whole stream (as multisets: a corpus may repeat a chunk) ...
  assert collections.Counter(host0) + collections.Counter(host1) == collections.Counter(whole)
  # ... and no chunk that occurs once in the stream is read by both hosts.
  unique = {doc for doc, n in collections.Counter(whole).items() if n == 1}
  assert not (set(host0) & set(host1) & unique)
  assert abs(len(host0) - len(host1)) < 0.1 * len(whole)
