"""Bounded-memory preparation: Forge JSONL -> encoded documents on scratch disk -> TFDS shards.

One pass reads the sources record by record (never a whole file), renders and tokenizes each, and
appends (ids, weights) to a local scratch file; only 12 bytes per document stay in memory (the
split bucket and the length), so a 10x corpus needs 10x scratch disk, not 10x RAM. The split is
then decided exactly as before (stable id hash, plus the one-record fallback for small sources)
and the TFDS writer streams each split back out of the scratch file into its shards.
"""
from __future__ import annotations

import array
import hashlib
import os

import numpy as np


def bucket(record_id: str) -> float:
  """Stable hash of a record id in [0, 1]: below validation_fraction = validation."""
  return int(hashlib.sha256(record_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


class Spill:
  """Encoded documents in source order in one local file: int32 ids then int32 weights each."""

  def __init__(self, directory: str):
    self.path = os.path.join(directory, "encoded.bin")  # local scratch (tempfile), not a user path
    self._f = open(self.path, "wb")
    self.buckets = array.array("d")
    self.lengths = array.array("i")

  def add(self, record_bucket: float, ids, weights) -> None:
    ids, weights = np.asarray(ids, np.int32), np.asarray(weights, np.int32)
    if ids.shape != weights.shape:
      raise ValueError(f"{len(ids)} ids but {len(weights)} loss weights")
    self._f.write(ids.tobytes())
    self._f.write(weights.tobytes())
    self.buckets.append(record_bucket)
    self.lengths.append(len(ids))

  def close(self) -> None:
    self._f.close()

  def __len__(self) -> int:
    return len(self.lengths)

  def read(self, keep):
    """Yields (ids, weights) of the documents i with keep[i], in order, one at a time."""
    with open(self.path, "rb") as f:
      for n, wanted in zip(self.lengths, keep):
        if not wanted:
          f.seek(8 * n, os.SEEK_CUR)
          continue
        ids = np.frombuffer(f.read(4 * n), np.int32)
        yield ids, np.frombuffer(f.read(4 * n), np.int32)


def validation_mask(buckets, fraction: float) -> np.ndarray:
  """True where a document is held out; a source of >= 2 documents always holds one out."""
  buckets = np.frombuffer(buckets, np.float64) if isinstance(buckets, array.array) else np.asarray(buckets)
  held_out = buckets < fraction
  if len(buckets) >= 2 and not held_out.any():
    held_out[int(np.argmin(buckets))] = True  # argmin: first of equal minima, as min() did
  return held_out


BATCH_RECORDS = 256  # records per tokenizer call (and per message to a worker)


def _train_batches(files, data_cfg, skipped: list):
  """Batches of trainable records, read one line at a time; skipped lines add to skipped[0]."""
  from heph_jax.data import forge
  batch = []
  for path in files:
    stats = forge.ReadStats(path=str(path))
    for record in forge.iter_records(path, on_error=data_cfg.on_error, stats=stats,
                                     max_record_bytes=data_cfg.max_record_bytes):
      if forge.is_train(record):  # eval data (e.g. BFCL questions) never enters training
        batch.append(record)
        if len(batch) == BATCH_RECORDS:
          yield batch
          batch = []
    skipped[0] += stats.skipped
  if batch:
    yield batch


def encode_sources(files, tokenizer, data_cfg, spill: Spill, encode_batch) -> int:
  """Streams every trainable record of `files` into `spill`; returns the lines skipped.

  config.data.prepare_workers > 1 tokenizes on that many processes (parallel.py); the spill,
  and so the dataset, is the same either way.
  """
  skipped = [0]
  batches = _train_batches(files, data_cfg, skipped)
  workers = int(data_cfg.get("prepare_workers", 1))
  if workers > 1:
    from heph_jax.data.prepare import parallel
    # The tokenizer this call was given (its spec; workers start in this cwd), not data_cfg's.
    encoded = parallel.encode_in_order(batches, tokenizer.name, data_cfg.loss_on, workers)
  else:
    encoded = (encode_batch(b, tokenizer, data_cfg.loss_on) for b in batches)
  for results in encoded:
    for record_id, (ids, weights) in results:
      if any(weights):
        spill.add(bucket(record_id), ids, weights)
  return skipped[0]


def shard_count(records: int, data_cfg) -> int:
  """Shards of a split: config.data.num_shards, fewer for a small split (no empty shard)."""
  per_shard = max(1, int(data_cfg.get("shard_min_records", 64)))
  return max(1, min(int(data_cfg.get("num_shards", 256)), records // per_shard))
